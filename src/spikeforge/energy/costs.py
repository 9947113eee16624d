"""Energy per operation: the 45 nm defaults and small TOML files of one's own.

``E = e_mac_pj · MACs + e_ac_pj · ACs`` (picojoules). The defaults are the 45 nm CMOS figures
for 32-bit floating point from Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, Fig. 1.1.9: an add costs 0.9 pJ and a multiply 3.7 pJ, so a multiply-accumulate
(MAC) costs 3.7 + 0.9 = 4.6 pJ and an accumulate (AC, what a binary spike triggers) 0.9 pJ. They
are the figures most SNN papers quote; they leave out memory access, which often dominates.

A costs file (``--costs FILE.toml``)::

    name = "my chip"        # optional: shown in the report
    source = "datasheet"    # optional: where the figures come from
    e_mac_pj = 4.6          # energy of one multiply-accumulate, pJ (>= 0)
    e_ac_pj = 0.9           # energy of one accumulate, pJ (>= 0)
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as a package before Python 3.11
    import tomli as tomllib

from ..errors import ConfigError


@dataclass(frozen=True)
class Costs:
    """Energy of one MAC and one AC in picojoules, with a name and the source of the figures."""

    e_mac_pj: float
    e_ac_pj: float
    name: str
    source: str

    def energy_pj(self, macs: float, acs: float) -> float:
        """``e_mac_pj · macs + e_ac_pj · acs``, in pJ."""
        return self.e_mac_pj * macs + self.e_ac_pj * acs

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


COSTS_45NM = Costs(e_mac_pj=4.6, e_ac_pj=0.9, name="45nm",
                   source="Horowitz, ISSCC 2014: 45 nm, 32-bit float (MAC = mult 3.7 + add 0.9 pJ, "
                          "AC = add 0.9 pJ)")
PRESETS = {"45nm": COSTS_45NM}
_NUMBERS = ("e_mac_pj", "e_ac_pj")
_TEXTS = ("name", "source")


def load_costs(spec: str | os.PathLike) -> Costs:
    """A preset by name (``45nm``) or a TOML file (see the module doc).

    Raises :class:`~spikeforge.errors.ConfigError` (one sentence naming the file) when the file
    is missing, is not TOML, lacks ``e_mac_pj``/``e_ac_pj``, has other keys, or a figure that is
    not a finite number >= 0.
    """
    if str(spec) in PRESETS:
        return PRESETS[str(spec)]
    path = Path(spec)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--costs {path}: no such file; give 45nm or a TOML file with "
                          "e_mac_pj and e_ac_pj.") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"--costs {path} is not a readable TOML file ({err}); fix it or use "
                          "--costs 45nm.") from None
    unknown = sorted(set(data) - set(_NUMBERS) - set(_TEXTS))
    if unknown:
        raise ConfigError(f"--costs {path} has unknown keys {', '.join(unknown)}; it may hold "
                          "only e_mac_pj, e_ac_pj, name and source.")
    values = {}
    for key in _NUMBERS:
        if key not in data:
            raise ConfigError(f"--costs {path} lacks {key}; give it in picojoules (45 nm: "
                              f"{getattr(COSTS_45NM, key)}).")
        value = data[key]
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            raise ConfigError(f"--costs {path} needs {key} as a number of picojoules >= 0, got "
                              f"{value!r}.")
        values[key] = float(value)
    for key in _TEXTS:
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"--costs {path}: {key} must be a string, got {data[key]!r}.")
    return Costs(**values, name=data.get("name", path.stem), source=data.get("source", str(path)))
