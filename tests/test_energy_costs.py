"""Energy per operation: the 45 nm defaults (Horowitz, ISSCC 2014) and TOML files, each bad file
refused with one sentence naming it."""

from __future__ import annotations

import pytest

from spikeforge.energy import COSTS_45NM, load_costs
from spikeforge.errors import ConfigError


def test_45nm_defaults():
    costs = load_costs("45nm")
    assert costs is COSTS_45NM
    assert (costs.e_mac_pj, costs.e_ac_pj) == (4.6, 0.9)     # 3.7 + 0.9 pJ, 0.9 pJ
    assert costs.energy_pj(macs=10, acs=100) == pytest.approx(46 + 90)


def test_toml_file(tmp_path):
    path = tmp_path / "chip.toml"
    path.write_text('name = "chip"\nsource = "datasheet"\ne_mac_pj = 3\ne_ac_pj = 0.25\n')
    costs = load_costs(path)
    assert (costs.e_mac_pj, costs.e_ac_pj, costs.name, costs.source) == (3.0, 0.25, "chip",
                                                                         "datasheet")
    path.write_text("e_mac_pj = 1.5\ne_ac_pj = 0\n")
    assert load_costs(path).name == "chip"            # defaults to the file's stem


@pytest.mark.parametrize("text, words", [
    ("e_mac_pj = 4.6\n", "lacks e_ac_pj; give it in picojoules (45 nm: 0.9)"),
    ("e_mac_pj = 4.6\ne_ac_pj = -1\n", "e_ac_pj"),
    ('e_mac_pj = "4.6"\ne_ac_pj = 0.9\n', "e_mac_pj"),
    ("e_mac_pj = true\ne_ac_pj = 0.9\n", "e_mac_pj"),
    ("e_mac_pj = nan\ne_ac_pj = 0.9\n", "e_mac_pj"),
    ("e_mac_pj = 4.6\ne_ac_pj = 0.9\ne_add = 1\n", "unknown keys e_add"),
    ("e_mac_pj = 4.6\ne_ac_pj = 0.9\nname = 3\n", "name must be a string"),
    ("e_mac_pj 4.6\n", "not a readable TOML file"),
])
def test_bad_file_is_one_sentence(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_costs(path)
    message = str(err.value)
    assert words in message and str(path) in message
    assert "\n" not in message and message.endswith(".")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_costs(tmp_path / "none.toml")
