"""Neuron parameters between spikeforge's per-step equations and NIR's ODEs, at a step of dt s.

NIR describes neurons in continuous time; one spikeforge step is one forward-Euler step of
length dt, which is how snnTorch, Norse and SpikingJelly simulate NIR graphs:

    LIF:  τ dv/dt = (v_leak − v) + r·I   →  v[t] = v[t−1] + (dt/τ)·(v_leak − v[t−1] + r·I[t])
    IF:   dv/dt = r·I                    →  v[t] = v[t−1] + dt·r·I[t]
    z[t] = [v[t] > v_threshold];  where z[t] = 1, v[t] ← v_reset

Exact correspondences (spikeforge τ in steps, NIR τ in seconds):

    IF                           nir.IF   r = 1/dt,                 v_reset = V_reset
    LIF, decay_input             nir.LIF  τ = τ·dt,     r = 1,      v_leak = v_reset = V_reset
    LIF, no decay_input          nir.LIF  τ = τ·dt,     r = τ,      v_leak = v_reset = V_reset
    Leaky(β < 1, reset="zero")   nir.LIF  τ = dt/(1−β), r = 1/(1−β), v_leak = v_reset = 0
    Leaky(β = 1, reset="zero")   nir.IF   r = 1/dt,                 v_reset = 0

Thresholds. IF/LIF fire when H reaches V_th (H ≥ V_th, SpikingJelly); NIR fires above
v_threshold (v > v_threshold, the rule of the NIR paper, Pedersen et al. 2024, and of snnTorch and
Norse). So an IF/LIF is written with v_threshold one float32 step below V_th
(:func:`nir_threshold`, 1.0 → 0.99999994): for every float32 membrane H,
``H ≥ fl32(V_th)  ⇔  H > nextafter(fl32(V_th), −∞)``, both rules give the same spikes. A
simulator in float64 can differ only for a membrane strictly between the two values (one float32
step, ~6e-8 relative). The exact V_th is kept in ``metadata["spikeforge_v_threshold"]`` so that
:func:`import_neuron` gives back the very same neuron; other IF/LIF nodes are read by NIR's rule
(:func:`threshold_from_nir`). Leaky fires above its threshold as NIR does and is written as it
is. Leaky resets from the previous
membrane (snnTorch): U[t] = β(1 − S[t−1])U[t−1] + X[t] is NIR's immediate reset to zero followed
by one Euler step, spike for spike. Each neuron node carries ``metadata["spikeforge_neuron"]``,
the class it came from, which :func:`import_neuron` uses to rebuild that class.
"""

from __future__ import annotations

from collections.abc import Callable

import nir
import numpy as np
import torch
from torch import nn

from ..neuron import IF, LIF, Leaky, RLeaky, SpikingNeuron
from .errors import NIRError
from .report import Approximation

TAG = "spikeforge_neuron"
V_TH_TAG = "spikeforge_v_threshold"

_MEMBRANE_OUTPUT = ("the layer also returns its membrane potential, which a NIR graph cannot "
                    "output; only its spikes can be exported")


def _full(shape: tuple[int, ...], value) -> np.ndarray:
    return np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), shape))


def _weights(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t if t.dtype == torch.float64 else t.float()).numpy().copy()


def nir_threshold(v_threshold: float) -> float:
    """NIR's v_threshold for an IF/LIF that fires when H ≥ ``v_threshold``: the largest float32
    below fl32(v_threshold), so that ``H ≥ fl32(v_threshold) ⇔ H > result`` for every float32 H."""
    return float(np.nextafter(np.float32(v_threshold), np.float32(-np.inf)))


def threshold_from_nir(v_threshold: float, dtype: torch.dtype = torch.float32) -> float:
    """The V_th of an IF/LIF (fires when H ≥ V_th) that fires as NIR does (v > ``v_threshold``)
    on membranes of ``dtype``: the smallest value of that dtype above ``v_threshold``
    (float64 for ``torch.float64``, else float32)."""
    if dtype == torch.float64:
        return float(np.nextafter(np.float64(v_threshold), np.inf))
    nearest = np.float32(v_threshold)
    return float(nearest if float(nearest) > v_threshold
                 else np.nextafter(nearest, np.float32(np.inf)))


def _if_lif(module: LIF, shape, dt: float, name: str, key: str,
            approximations: list[Approximation]) -> nir.NIRNode:
    kind = "IF" if module.tau is None else "LIF"
    v_reset = module.v_reset
    if v_reset is None:
        approximations.append(Approximation(
            name, key, "soft-reset", kind,
            "soft reset (V − V_th after a spike) has no NIR form; the nearest is NIR's reset "
            "to v_reset = 0"))
        v_reset = 0.0
    elif v_reset != 0.0:
        approximations.append(Approximation(
            name, key, "initial-state", kind,
            f"the membrane starts at V_reset = {v_reset}; NIR stores no initial state (snnTorch "
            "starts at 0, Norse at v_leak)"))
    meta = {TAG: type(module).__name__, V_TH_TAG: float(module.v_threshold)}
    v_threshold = _full(shape, nir_threshold(module.v_threshold))
    if module.tau is None:
        return nir.IF(r=_full(shape, 1.0 / dt), v_threshold=v_threshold,
                      v_reset=_full(shape, v_reset), metadata=meta)
    return nir.LIF(tau=_full(shape, module.tau * dt),
                   r=_full(shape, 1.0 if module.decay_input else module.tau),
                   v_leak=_full(shape, v_reset), v_threshold=v_threshold,
                   v_reset=_full(shape, v_reset), metadata=meta)


def _leaky_node(beta: np.ndarray, threshold: float, dt: float, tag: str) -> nir.NIRNode:
    shape, meta = beta.shape, {TAG: tag}
    if np.all(beta == 1.0):
        return nir.IF(r=_full(shape, 1.0 / dt), v_threshold=_full(shape, threshold),
                      v_reset=_full(shape, 0.0), metadata=meta)
    with np.errstate(divide="ignore"):
        tau, r = dt / (1.0 - beta), 1.0 / (1.0 - beta)
    return nir.LIF(tau=tau, r=r, v_leak=_full(shape, 0.0), v_threshold=_full(shape, threshold),
                   v_reset=_full(shape, 0.0), metadata=meta)


def _beta(module: Leaky | RLeaky, shape) -> np.ndarray:
    return _full(shape, module.beta.detach().clamp(0, 1).double().cpu().numpy())


def _leaky(module: Leaky, shape, dt: float, name: str, key: str,
           approximations: list[Approximation]) -> nir.NIRNode:
    node = _leaky_node(_beta(module, shape), module.threshold, dt, "Leaky")
    written = type(node).__name__
    if module.reset == "subtract":
        approximations.append(Approximation(
            name, key, "subtract-reset", written,
            "subtract reset (U − thr after a spike) has no NIR form; the nearest is NIR's reset "
            "to 0"))
    if module.output == "both":
        approximations.append(Approximation(name, key, "membrane-output", written,
                                            _MEMBRANE_OUTPUT))
    return node


def _recurrent_weight(module: RLeaky, shape) -> nir.NIRNode:
    rec = module.recurrent
    if module.recurrence == "linear":
        return nir.Affine(weight=_weights(rec.weight), bias=_weights(rec.bias))
    if module.recurrence == "one_to_one":
        return nir.Linear(weight=np.diag(_weights(rec.weight)))
    return nir.Conv2d(input_shape=tuple(shape[1:]), weight=_weights(rec.weight),
                      stride=rec.stride, padding=rec.padding, dilation=rec.dilation,
                      groups=rec.groups, bias=_weights(rec.bias))


def _rleaky(module: RLeaky, shape, dt: float, name: str, key: str,
            approximations: list[Approximation]) -> nir.NIRNode:
    lif = _leaky_node(_beta(module, shape), module.threshold, dt, "Leaky")
    detail = ("RLeaky subtracts the threshold after a spike" if module.reset == "subtract" else
              "RLeaky(reset='zero') clears the membrane together with that step's input after a "
              "spike")
    approximations.append(Approximation(
        name, key, "recurrent-reset", "NIRGraph",
        f"{detail}; the nearest NIR form is a recurrent subgraph (neuron ⇄ recurrent weights, "
        "fed back one step late) whose neuron resets to 0 and keeps its input"))
    if module.output == "both":
        approximations.append(Approximation(name, key, "membrane-output", "NIRGraph",
                                            _MEMBRANE_OUTPUT))
    nodes = {"input": nir.Input(input_type=np.array(shape)), "lif": lif,
             "w_rec": _recurrent_weight(module, shape),
             "output": nir.Output(output_type=np.array(shape))}
    edges = [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={TAG: "RLeaky"})


def export_neuron(module: SpikingNeuron, shape: tuple[int, ...], dt: float, name: str, key: str,
                  approximations: list[Approximation]) -> nir.NIRNode:
    """The NIR node of ``module`` on per-sample ``shape``; appends what is not exact."""
    if isinstance(module, RLeaky):
        return _rleaky(module, shape, dt, name, key, approximations)
    if isinstance(module, Leaky):
        return _leaky(module, shape, dt, name, key, approximations)
    if isinstance(module, LIF):
        return _if_lif(module, shape, dt, name, key, approximations)
    raise NIRError(f"layer '{name}' ({type(module).__name__}) is a neuron without a NIR form")


def _uniform(values: np.ndarray, what: str, key: str) -> float:
    unique = np.unique(np.asarray(values, dtype=np.float64))
    if unique.size != 1:
        raise NIRError(f"NIR node '{key}': {what} differs between neurons, but spikeforge's "
                       "neurons take one value per layer")
    return float(unique[0])


def _shortest(approx: float, forward: Callable[[float], float], stored: float) -> float:
    """The shortest decimal c with ``forward(c) == stored`` bit for bit (else ``approx``): undoes
    the binary rounding of τ·dt, so that τ = 2.3 written at dt = 1e-4 reads back as 2.3. A
    candidate ``forward`` cannot take (β = 0.97 rounded to one digit is 1, and τ = dt/(1 − β)
    divides by zero) is passed over."""
    for digits in range(1, 18):
        c = float(f"{approx:.{digits}g}")
        try:
            if forward(c) == stored:
                return c
        except ZeroDivisionError:
            continue
    return approx


def _close(a: np.ndarray, b) -> bool:
    return bool(np.allclose(a, b, rtol=1e-6, atol=0.0))


def _as_leaky(node: nir.LIF | nir.IF, dt: float, key: str) -> Leaky:
    threshold = _uniform(node.v_threshold, "v_threshold", key)
    if not (_close(node.v_reset, 0.0) and _close(getattr(node, "v_leak", 0.0), 0.0)):
        raise NIRError(f"NIR node '{key}': a Leaky neuron needs v_leak = v_reset = 0")
    if isinstance(node, nir.IF):
        if not _close(np.asarray(node.r) * dt, 1.0):
            raise NIRError(f"NIR node '{key}' (IF): r is not 1/dt = {1 / dt:g}; pass the time "
                           "step the graph was written for (from_nir(..., dt=...))")
        return Leaky(beta=1.0, threshold=threshold, reset="zero")
    tau = np.asarray(node.tau, dtype=np.float64)
    if not _close(np.asarray(node.r) * dt / tau, 1.0):
        raise NIRError(f"NIR node '{key}': a Leaky neuron needs r = tau/dt (input unscaled); "
                       "check that dt matches the graph's time step")
    values, inverse = np.unique(tau, return_inverse=True)
    if not (np.isfinite(values).all() and (values >= dt).all()):
        raise NIRError(f"NIR node '{key}': tau must be finite and at least dt = {dt:g} for a "
                       "Leaky neuron (beta = 1 - dt/tau in [0, 1]); check the graph's time step")
    betas = np.array([_shortest(1.0 - dt / t, lambda b: dt / (1.0 - b), t) for t in values])
    beta = betas[inverse].reshape(tau.shape)
    return Leaky(beta=float(beta.flat[0]) if values.size == 1 else torch.from_numpy(beta),
                 threshold=threshold, reset="zero")


def _if_lif_threshold(node: nir.LIF | nir.IF, key: str, dtype: torch.dtype) -> float:
    """V_th of the IF/LIF read from ``node``: the exact one spikeforge wrote, else NIR's rule."""
    threshold = _uniform(node.v_threshold, "v_threshold", key)
    written = (node.metadata or {}).get(V_TH_TAG)
    if written is not None and nir_threshold(float(written)) == threshold:
        return float(written)
    return threshold_from_nir(threshold, dtype)


def _as_if_lif(node: nir.LIF | nir.IF, dt: float, key: str, dtype: torch.dtype) -> LIF:
    threshold = _if_lif_threshold(node, key, dtype)
    v_reset = _uniform(node.v_reset, "v_reset", key)
    r = _uniform(node.r, "r", key)
    if isinstance(node, nir.IF):
        if not _close(r * dt, 1.0):
            raise NIRError(f"NIR node '{key}' (IF): r = {r:g} is not 1/dt = {1 / dt:g}; pass the "
                           "time step the graph was written for (from_nir(..., dt=...))")
        return IF(v_threshold=threshold, v_reset=v_reset)
    stored = _uniform(node.tau, "tau", key)
    tau = _shortest(stored / dt, lambda t: t * dt, stored)
    if not _close(_uniform(node.v_leak, "v_leak", key), v_reset):
        raise NIRError(f"NIR node '{key}' (LIF): v_leak differs from v_reset, but spikeforge's "
                       "LIF leaks towards its reset value")
    if _close(r, 1.0):
        decay_input = True
    elif _close(r, tau):
        decay_input = False
    else:
        raise NIRError(f"NIR node '{key}' (LIF): r = {r:g} is neither 1 nor tau/dt = {tau:g}; "
                       "check that dt matches the graph's time step")
    try:
        return LIF(tau=tau, decay_input=decay_input, v_threshold=threshold, v_reset=v_reset)
    except ValueError as err:
        raise NIRError(f"NIR node '{key}' (LIF): {err}") from None


def import_neuron(node: nir.LIF | nir.IF, dt: float, key: str,
                  dtype: torch.dtype = torch.float32) -> nn.Module:
    """The spikeforge neuron of a NIR ``LIF``/``IF`` node at step ``dt``, for membranes of
    ``dtype``.

    Nodes written by spikeforge rebuild their original class (``metadata["spikeforge_neuron"]``)
    and threshold. Other nodes with v_leak = v_reset = 0 and an unscaled input (r = τ/dt, as
    snnTorch writes Leaky) become ``Leaky(reset="zero")``, which fires above the threshold as NIR
    does; the rest become IF/LIF (SpikingJelly's form: r = 1 or τ/dt, v_leak = v_reset) with V_th
    the first ``dtype`` value above v_threshold (:func:`threshold_from_nir`), so that they too fire
    only above it.
    """
    tag = (node.metadata or {}).get(TAG)
    if tag == "Leaky":
        return _as_leaky(node, dt, key)
    if tag is None and isinstance(node, nir.LIF) and _close(node.v_leak, 0.0) \
            and _close(node.v_reset, 0.0) and _close(np.asarray(node.r) * dt / node.tau, 1.0):
        return _as_leaky(node, dt, key)
    return _as_if_lif(node, dt, key, dtype)
