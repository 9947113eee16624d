"""spikeforge.energy.report against networks whose spikes and synaptic operations are counted
by hand: a Linear fed known spikes, real-valued input, Conv2d taps at a padded border and with
stride and groups, average pooling folded into the next layer, recurrent feedback, the csnn stem
that runs once for all T, N-MNIST event counts, and fc-lif's Poisson input in expectation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikeforge import models
from spikeforge.energy import COSTS_45NM, report
from spikeforge.energy.fanout import fanout
from spikeforge.layer import seq
from spikeforge.neuron import IF, RLeaky


def rows(rep):
    return {layer.name: layer for layer in rep.layers}


def two_linear_net() -> nn.Sequential:
    """Linear(4→5, all ones) → IF(θ=0.5) → Linear(5→3, zeros) → IF: every hidden neuron fires at
    a step where any input spike arrives (H ≥ 1 ≥ 0.5, reset to 0), and never otherwise; the
    output layer never fires."""
    net = seq(nn.Linear(4, 5, bias=False), IF(v_threshold=0.5), nn.Linear(5, 3, bias=False),
              IF())
    with torch.no_grad():
        net[0].module.weight.fill_(1.0)
        net[2].module.weight.zero_()
    return net


def test_linear_counts_known_spikes():
    x = torch.zeros(3, 2, 4)                 # T = 3, B = 2
    x[0, 0] = torch.tensor([1.0, 0, 1, 0])   # sample 0: 2 spikes at t = 0, none at t = 1,
    x[2, 0] = 1.0                            # 4 at t = 2; sample 1: silent input
    rep = report(two_linear_net(), [x])
    r = rows(rep)
    assert rep.samples == 2
    # 6 input spikes × 5 outputs / 2 samples; hidden: 5 neurons fire at t = 0 and t = 2 of
    # sample 0 → 10 spikes × 3 outputs / 2 samples
    assert r["0"].acs == 15.0 and r["0"].macs == 0.0
    assert r["2"].acs == 15.0
    assert r["1"].rate == pytest.approx(10 / (3 * 2 * 5))
    assert r["1"].silent == pytest.approx(0.5)       # sample 0: none silent, sample 1: all
    assert r["1"].dead == 0.0
    assert r["3"].dead == 1.0 and r["3"].rate == 0.0 and r["3"].silent == 1.0
    assert r["0"].ann_macs == 20.0 and r["2"].ann_macs == 15.0
    assert rep.acs == 30.0 and rep.ann_macs == 35.0
    assert rep.energy_pj == pytest.approx(0.9 * 30)
    assert rep.ann_energy_pj == pytest.approx(4.6 * 35)
    assert [layer.role for layer in rep.layers] == ["synaptic", "spiking"] * 2


def test_real_valued_input_is_dense_macs_at_every_step():
    x = torch.full((3, 2, 4), 0.25)          # real values: the dense layer, T·B rows of 4
    r = rows(report(two_linear_net(), [x]))
    assert r["0"].macs == 3 * 4 * 5 and r["0"].acs == 0.0
    assert r["0"].energy_pj == pytest.approx(4.6 * 60)


def test_conv_counts_only_taps_inside_the_output():
    net = seq(nn.Conv2d(1, 2, 3, padding=1, bias=False), IF())
    x = torch.zeros(1, 1, 1, 4, 4)
    x[0, 0, 0, 0, 0] = 1      # corner: output rows {0, 1} × columns {0, 1} → 4 taps
    x[0, 0, 0, 0, 2] = 1      # top edge: rows {0, 1} × columns {1, 2, 3} → 6 taps
    x[0, 0, 0, 1, 1] = 1      # interior: 3 × 3 → 9 taps
    r = rows(report(net, [x]))
    assert r["0"].acs == (4 + 6 + 9) * 2
    # dense: per axis, Σ over the 4 positions of the taps inside = 2 + 3 + 3 + 2 = 10
    assert r["0"].ann_macs == 10 * 10 * 2


def test_conv_fanout_with_stride_and_groups():
    # stride 2, padding 1 on 4 rows: output o reads rows 2o−1 .. 2o+1 → row 0: o=0 (1 tap),
    # row 1: o=0 and o=1 (2), row 2: o=1 (1), row 3: o=1 (1)
    fan = fanout(nn.Conv2d(1, 1, 3, stride=2, padding=1), (1, 4, 4))
    per_row = torch.tensor([1.0, 2, 1, 1], dtype=torch.float64)
    assert torch.equal(fan[0], per_row[:, None] * per_row[None, :])
    # groups=2: each input channel drives out_channels / groups = 3 output channels
    fan = fanout(nn.Conv2d(2, 6, 1, groups=2), (2, 3, 3))
    assert torch.equal(fan, torch.full((2, 3, 3), 3.0, dtype=torch.float64))
    assert torch.equal(fanout(nn.Linear(7, 5), (7,)), torch.full((7,), 5.0, dtype=torch.float64))


def test_average_pooled_spikes_count_as_the_spikes_they_average():
    net = seq(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(1, 2, bias=False), IF())
    x = torch.tensor([1.0, 1.0, 0.0, 1.0]).view(1, 1, 1, 2, 2)   # pooled to 0.75
    r = rows(report(net, [x]))
    assert r["2"].acs == 3 * 2 and r["2"].macs == 0.0     # 3 spikes × 2 outputs, weight w/4


def test_recurrent_spikes_fed_back_are_synaptic_operations():
    # β = 0, reset to zero, threshold 1: a constant input of 2 fires at t = 0 and t = 2 (reset
    # at t = 1); 0.5 never fires. Zero recurrent weights keep that pattern.
    for recurrence, fan_out in (("linear", 3), ("one_to_one", 1)):
        neuron = RLeaky(0.0, 3, recurrence=recurrence, reset="zero")
        with torch.no_grad():
            for p in neuron.recurrent.parameters():
                p.zero_()
        x = torch.tensor([2.0, 2.0, 0.5]).expand(3, 1, 3).contiguous()   # T = 3, B = 1
        rep = report(seq(neuron), [x])
        r = rows(rep)
        assert r["0"].rate == pytest.approx(4 / 9)
        assert r["0"].silent == pytest.approx(1 / 3)
        # fed back: S[0] (2 spikes) into step 1, S[1] (none) into step 2; S[2] goes nowhere
        assert r["0.recurrent"].acs == 2 * fan_out
        assert r["0.recurrent"].role == "recurrent" and r["0.recurrent"].ann_macs == 0.0
        assert [layer.name for layer in rep.layers] == ["0", "0.recurrent"]


def test_rleaky_net_counts_encoder_once_and_feedback():
    model = models.RLeakyNet(steps=5, hidden=16)
    rep = report(model, [torch.rand(3, 1, 28, 28)])
    r = rows(rep)
    assert r["encoder.1"].macs == 784 * 16          # real image, once for all 5 steps
    hidden = r["hidden"]
    # the hidden layer's spikes reach the readout at every step, the feedback at all but the last
    assert r["readout"].acs == pytest.approx(hidden.spikes * 10)
    assert 0 <= r["hidden.recurrent"].acs <= hidden.spikes * 16
    assert [layer.name for layer in rep.layers] == [
        "encoder.1", "hidden", "hidden.recurrent", "readout", "output", "output.recurrent"]


def test_csnn_stem_runs_once_for_all_steps():
    model = models.CSNN(channels=4, steps=4)
    rep = report(model, [torch.rand(2, 1, 28, 28)])
    r = rows(rep)
    assert r["stem.0"].macs == 82 * 82 * 4 == r["stem.0"].ann_macs   # (28·3 − 2)² taps, once
    assert r["stem.0"].acs == 0.0
    # the second conv is fed binary pooled spikes (ACs only) at each step; as an ANN, once on
    # 14 × 14: (14·3 − 2)² taps × 4 × 4 channels
    assert r["body.2"].macs == 0.0 and r["body.2"].ann_macs == 40 * 40 * 4 * 4


def test_nmnist_events_count_as_spikes():
    model = models.NmnistCSNN()
    frames = torch.zeros(4, 1, 2, 34, 34)
    frames[0, 0, 0, 0, 0] = 1        # a corner event: one output position, 12 channels
    frames[1, 0, 1, 17, 17] = 2      # two events inside: 25 taps × 12 channels each
    r = rows(report(model, [frames]))
    assert r["net.0"].acs == 12 * 1 + 2 * 25 * 12
    assert r["net.0"].ann_macs == 2 * 12 * (30 * 5) ** 2   # 5×5 taps, no padding, 34 → 30


def test_fc_lif_poisson_acs_are_ten_times_T_times_the_pixel_sum():
    torch.manual_seed(0)
    steps, n = 8, 200
    x = torch.rand(n, 1, 28, 28) * (torch.rand(n, 1, 28, 28) < 0.2)
    model = models.FcLif(steps=steps)
    rep = report(model, [x[:100], x[100:]], generator=torch.Generator().manual_seed(1))
    expected = 10 * steps * float(x.sum()) / n
    # Bernoulli spikes: Var = T·Σ p(1−p); P(S=1) is quantised to 1/65536 (2^-17 per pixel)
    std = 10 * math.sqrt(steps * float((x * (1 - x)).sum())) / n
    assert abs(rows(rep)["net.1"].acs - expected) < 4 * std + 10 * steps * 784 * 2 ** -17


def test_a_layer_bypassing_its_module_is_refused():
    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.neuron = nn.Linear(4, 2), IF()

        def forward(self, x):
            return self.neuron(F.linear(x, self.fc.weight))

    with pytest.raises(ValueError, match="fc did not run through"):
        report(Fused(), [torch.ones(2, 1, 4)])


def test_costs_change_the_energy_only():
    x = torch.zeros(3, 2, 4)
    x[0, 0] = 1.0
    cheap = COSTS_45NM.__class__(e_mac_pj=1.0, e_ac_pj=0.5, name="t", source="test")
    a, b = report(two_linear_net(), [x]), report(two_linear_net(), [x], costs=cheap)
    assert a.acs == b.acs and b.energy_pj == pytest.approx(0.5 * b.acs)
