"""Thresholds across NIR: spikeforge's IF/LIF fire when H ≥ V_th, NIR when v > v_threshold.

Imports follow NIR's rule; exports write v_threshold one float32 step below V_th, so that the
graph, simulated by NIR's own equations in float32, fires at the same steps as spikeforge.
"""

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from spikeforge import functional as SF  # noqa: E402
from spikeforge.export import from_nir, to_nir  # noqa: E402
from spikeforge.export.neurons import nir_threshold, threshold_from_nir  # noqa: E402
from spikeforge.layer import seq  # noqa: E402
from spikeforge.neuron import IF, LIF  # noqa: E402

DT = 1e-4


def _chain(node) -> nir.NIRGraph:
    return nir.NIRGraph(nodes={"input": nir.Input(np.array([1])), "n": node,
                               "output": nir.Output(np.array([1]))},
                        edges=[("input", "n"), ("n", "output")])


def _nir_simulate(node, current: float, steps: int, dt: float = DT) -> np.ndarray:
    """NIR's equations by forward Euler in float32 (coefficients in float64, then rounded):
    IF v += dt·r·I, LIF v += (dt/τ)(v_leak − v + r·I); spike when v > v_threshold, then v_reset."""
    f32 = np.float32
    v, theta, v_reset = f32(0), f32(node.v_threshold[0]), f32(node.v_reset[0])
    spikes = []
    for _ in range(steps):
        if isinstance(node, nir.IF):
            v = f32(v + f32(dt * node.r[0] * current))
        else:
            k = f32(dt / node.tau[0])
            v = f32(v + k * f32(f32(node.v_leak[0]) - v + f32(node.r[0] * current)))
        fired = v > theta
        spikes.append(fired)
        if fired:
            v = v_reset
    return np.array(spikes)


def _first_step(spikes) -> int:
    """The 1-based step of the first spike."""
    return int(np.flatnonzero(np.asarray(spikes).reshape(len(spikes), -1)[:, 0])[0]) + 1


def _spikeforge(net, current: float, steps: int, dtype=torch.float32) -> np.ndarray:
    """Spikes ``[T, 1, 1]`` of ``net`` from rest on a constant input."""
    SF.reset(net)
    with torch.no_grad():
        return net(torch.full((steps, 1, 1), current, dtype=dtype)).numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_foreign_if_fires_only_above_the_threshold(dtype):
    node = nir.IF(r=np.array([1e4]), v_threshold=np.array([1.0]), v_reset=np.array([0.0]))
    net = from_nir(_chain(node), dt=DT, dtype=dtype)
    # the membrane is exactly 1.0 after 16 steps of 0.0625: NIR fires one step later
    assert _first_step(_spikeforge(net, 0.0625, 40, dtype)) == 17
    assert _first_step(_nir_simulate(node, 0.0625, 40)) == 17


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_foreign_lif_fires_only_above_the_threshold(dtype):
    node = nir.LIF(tau=np.array([2e-4]), r=np.array([1.0]), v_leak=np.array([0.0]),
                   v_reset=np.array([0.0]), v_threshold=np.array([1.0]))
    net = from_nir(_chain(node), dt=DT, dtype=dtype)
    # v[1] = 0 + (1e-4/2e-4)·(0 − 0 + 2) = 1.0, not above 1; v[2] = 1 + (2 − 1)/2 = 1.5
    assert _first_step(_spikeforge(net, 2.0, 10, dtype)) == 2
    assert _first_step(_nir_simulate(node, 2.0, 10)) == 2


def test_an_exported_if_fires_at_the_same_step_on_both_sides():
    net = seq(IF())
    graph, report = to_nir(net, (1,), dt=DT)
    assert report.exact
    assert _first_step(_spikeforge(net, 0.0625, 40)) == 16
    sim = _nir_simulate(graph.nodes["layer_0"], 0.0625, 40)
    assert _first_step(sim) == 16
    np.testing.assert_array_equal(sim, _spikeforge(net, 0.0625, 40)[:, 0, 0].astype(bool))


def test_an_exported_lif_fires_at_the_same_steps_on_both_sides():
    net = seq(LIF(tau=2.0))
    graph, _ = to_nir(net, (1,), dt=DT)
    want = _spikeforge(net, 2.0, 10)[:, 0, 0].astype(bool)
    assert _first_step(want) == 1                     # H = 1.0 reaches V_th = 1 at once
    np.testing.assert_array_equal(_nir_simulate(graph.nodes["layer_0"], 2.0, 10), want)


@pytest.mark.parametrize("v_th", [1.0, 0.7, 0.1, 2.5, -0.3, 1e-30])
def test_the_moved_threshold_gives_the_same_rule_for_every_float32_near_it(v_th):
    theta = np.float32(nir_threshold(v_th))
    c = np.float32(v_th)
    assert theta == np.nextafter(c, np.float32(-np.inf))      # one float32 step below
    near = [c]
    for _ in range(4):                                        # c and its 4 neighbours each way
        near = [np.nextafter(near[0], np.float32(-np.inf)), *near,
                np.nextafter(near[-1], np.float32(np.inf))]
    h = np.array(near, dtype=np.float32)
    np.testing.assert_array_equal(h >= c, h > theta)
    assert threshold_from_nir(float(theta)) == float(c)       # NIR's rule reads it back


def test_a_graph_without_our_metadata_still_reads_back_the_same_if():
    graph, _ = to_nir(seq(IF(v_threshold=0.7)), (1,), dt=DT)
    graph.nodes["layer_0"].metadata = {}
    assert from_nir(graph)[0].v_threshold == float(np.float32(0.7))


def test_a_threshold_beyond_float32_round_trips_exactly_in_float64(tmp_path):
    net = seq(LIF(tau=2.0, v_threshold=0.3)).double()          # 0.3 is no float32
    graph, _ = to_nir(net, (1,), dt=DT)
    nir.write(tmp_path / "n.nir", graph)
    back = from_nir(tmp_path / "n.nir", dtype=torch.float64)
    assert back[0].v_threshold == 0.3
