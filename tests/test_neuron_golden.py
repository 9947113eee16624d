"""Membrane and spike traces computed by hand (DESIGN §3), compared with the modules."""

import pytest
import torch

from spikeforge.neuron import IF, LIF, Leaky, RLeaky


def run(neuron, xs):
    x = torch.tensor(xs, dtype=torch.float64).view(-1, 1, 1)
    neuron.record = True
    out = neuron(x)
    spikes = out[0] if isinstance(out, tuple) else out
    return spikes.flatten().tolist(), neuron.v_seq.flatten().tolist()


CASES = [
    # IF, hard reset to 0: H = V + X, fires on H >= 1 (t1 reaches exactly 1.0).
    (lambda: IF(), [0.5, 0.5, 0.2, 1.5, -0.3, 0.9],
     [0, 1, 0, 1, 0, 0], [0.5, 0.0, 0.2, 0.0, -0.3, 0.6]),
    # IF, soft reset: V = H - S.
    (lambda: IF(v_reset=None), [0.5, 0.75, 0.25, 1.5, -0.25, 0.875],
     [0, 1, 0, 1, 0, 1], [0.5, 0.25, 0.5, 1.0, 0.75, 0.625]),
    # LIF tau=2 decay_input, hard reset 0: H = V + (X - V)/2.
    (lambda: LIF(tau=2.0), [1.0, 1.0, 1.0, 0.0, 3.0, 2.0],
     [0, 0, 0, 0, 1, 1], [0.5, 0.75, 0.875, 0.4375, 0.0, 0.0]),
    # LIF tau=2 decay_input, soft reset.
    (lambda: LIF(tau=2.0, v_reset=None), [1.0, 1.0, 1.0, 0.0, 3.0, 2.0],
     [0, 0, 0, 0, 1, 1], [0.5, 0.75, 0.875, 0.4375, 0.71875, 0.359375]),
    # LIF tau=2 without decay_input: H = V - V/2 + X.
    (lambda: LIF(tau=2.0, decay_input=False), [0.5, 0.5, 0.5, 0.5, 2.0, 0.0],
     [0, 0, 0, 0, 1, 0], [0.5, 0.75, 0.875, 0.9375, 0.0, 0.0]),
    # LIF tau=2, v_reset=-0.5 (rest and reset): H = V + (X - (V + 0.5))/2, V[-1] = -0.5.
    (lambda: LIF(tau=2.0, v_reset=-0.5), [3.0, 1.0, 2.0, 0.0, 4.0, 1.0],
     [1, 0, 0, 0, 1, 0], [-0.5, 0.0, 0.75, 0.125, -0.5, 0.0]),
    # Leaky beta=0.5 subtract: R from U[t-1] > 1; t1 reaches exactly 1.0 and does not fire.
    (lambda: Leaky(0.5), [0.5, 0.75, 1.0, 0.0, 2.0, 0.25],
     [0, 0, 1, 0, 1, 0], [0.5, 1.0, 1.5, -0.25, 1.875, 0.1875]),
    # Leaky beta=0.5 zero reset: U = beta (1 - R) U + X.
    (lambda: Leaky(0.5, reset="zero"), [0.5, 0.75, 1.0, 0.0, 2.0, 0.25],
     [0, 0, 1, 0, 1, 0], [0.5, 1.0, 1.5, 0.0, 2.0, 0.25]),
]


@pytest.mark.parametrize("make, xs, spikes, volts", CASES)
def test_golden_trace(make, xs, spikes, volts):
    got_s, got_v = run(make(), xs)
    assert got_s == spikes
    assert got_v == pytest.approx(volts, abs=1e-12)


def _one_to_one(reset):
    n = RLeaky(0.5, 1, recurrence="one_to_one", reset=reset)
    with torch.no_grad():
        n.recurrent.weight.fill_(0.5)
    return n.double()


@pytest.mark.parametrize("reset, spikes, volts", [
    # U = 0.5 U + X + 0.5 S[t-1] - R
    ("subtract", [1, 0, 0, 1, 0, 0], [1.25, 0.125, 0.5625, 1.28125, 0.140625, 0.0703125]),
    # U = (1 - R)(0.5 U + X + 0.5 S[t-1])
    ("zero", [1, 0, 0, 1, 0, 0], [1.25, 0.0, 0.5, 1.25, 0.0, 0.0]),
])
def test_rleaky_one_to_one_golden(reset, spikes, volts):
    got_s, got_v = run(_one_to_one(reset), [1.25, 0.0, 0.5, 1.0, 0.0, 0.0])
    assert got_s == spikes
    assert got_v == pytest.approx(volts, abs=1e-12)


def test_rleaky_linear_feedback_golden():
    n = RLeaky(0.5, 2, recurrence="linear").double()
    with torch.no_grad():
        n.recurrent.weight.copy_(torch.tensor([[0.0, 0.5], [-1.0, 0.0]]))
        n.recurrent.bias.copy_(torch.tensor([0.0, 0.25]))
    x = torch.tensor([[1.5, 0.0], [0.0, 0.5], [0.0, 0.5]], dtype=torch.float64).unsqueeze(1)
    n.record = True
    s = n(x)
    # t0: U = (1.5, 0.25), S = (1, 0); t1: R = (1, 0), feedback (0, -.75): U = (-.25, -.125)
    # t2: U0 = -.125 + 0 + 0 = -.125, U1 = -.0625 + .5 + .25 = .6875
    assert s.squeeze(1).tolist() == [[1, 0], [0, 0], [0, 0]]
    assert n.v_seq.flatten().tolist() == pytest.approx(
        [1.5, 0.25, -0.25, -0.125, -0.125, 0.6875], abs=1e-12)
