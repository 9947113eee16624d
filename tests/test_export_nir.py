"""NIR export and import: node parameters, exact round trips, refusals and approximations."""

import json

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")

from spikeforge import functional as SF  # noqa: E402
from spikeforge import models  # noqa: E402
from spikeforge.errors import DataError  # noqa: E402
from spikeforge.export import (  # noqa: E402
    NIRError,
    NotExportableError,
    fold_batchnorm,
    from_nir,
    to_nir,
)
from spikeforge.export.modules import Recurrent  # noqa: E402
from spikeforge.layer import seq  # noqa: E402
from spikeforge.neuron import IF, LIF, Leaky, RLeaky  # noqa: E402

MNIST = (1, 28, 28)


def _reread(graph, tmp_path):
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    return nir.read(path)


def _arrays(graph):
    """Every weight/bias array in ``graph``, subgraphs included."""
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            yield from _arrays(node)
        for field in ("weight", "bias"):
            if hasattr(node, field):
                yield np.asarray(getattr(node, field))


def _holds(graph, tensor):
    want = tensor.detach().numpy()
    return any(a.shape == want.shape and np.array_equal(a, want) for a in _arrays(graph))


def _active_fc_lif():
    torch.manual_seed(0)
    net = models.build("fc-lif")
    with torch.no_grad():
        net.net[1].module.weight.mul_(8)
    return net


def _active_csnn(pool):
    torch.manual_seed(1)
    net = models.build("csnn", channels=8, pool=pool)
    for bn in (net.stem[1], net.body[3].module):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.8, 1.5)
        bn.bias.data.uniform_(0.0, 0.5)
    with torch.no_grad():
        net.body[7].module.weight.mul_(6)
        net.body[9].module.weight.mul_(6)
    return net.eval()


def test_fc_lif_nodes_carry_the_documented_conventions():
    graph, report = to_nir(models.build("fc-lif", tau=2.0), MNIST, dt=1e-3)
    assert report.exact
    assert [type(graph.nodes[k]).__name__ for k in ("input", "net_0", "net_1", "net_2")] == [
        "Input", "Flatten", "Linear", "LIF"]
    flat, lif = graph.nodes["net_0"], graph.nodes["net_2"]
    assert (flat.start_dim, flat.end_dim) == (0, -1)          # no batch axis in NIR
    np.testing.assert_array_equal(lif.tau, np.full(10, 2e-3))  # τ·dt seconds
    np.testing.assert_array_equal(lif.r, np.ones(10))          # decay_input: r = 1
    np.testing.assert_array_equal(lif.v_leak, np.zeros(10))
    np.testing.assert_array_equal(lif.v_reset, np.zeros(10))
    below_one = float(np.nextafter(np.float32(1), np.float32(0)))   # 0.99999994
    np.testing.assert_array_equal(lif.v_threshold, np.full(10, below_one))
    assert lif.metadata == {"spikeforge_neuron": "LIF", "spikeforge_v_threshold": 1.0}
    assert graph.metadata["dt"] == 1e-3


def test_fc_lif_round_trip_gives_identical_spikes(tmp_path):
    net = _active_fc_lif()
    graph, _ = to_nir(net, MNIST)
    rebuilt = from_nir(_reread(graph, tmp_path))
    x = (torch.rand(30, 4, *MNIST, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    want = net(x)
    got = rebuilt(x)
    assert 0.05 < want.mean() < 0.9
    assert torch.equal(got, want)
    assert isinstance(rebuilt[2], LIF) and rebuilt[2].tau == 2.0
    assert torch.equal(rebuilt[1].module.weight, net.net[1].module.weight)


def test_csnn_with_average_pooling_round_trip_gives_identical_spikes(tmp_path):
    net = _active_csnn("avg")
    graph, report = to_nir(net, MNIST)
    assert report.exact and sum("folded" in n for n in report.notes) == 2
    rebuilt = from_nir(_reread(graph, tmp_path))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in rebuilt.modules())
    x = torch.rand(4, *MNIST, generator=torch.Generator().manual_seed(3))
    want = net(x)                                           # image repeated over steps=4
    got = rebuilt(x.unsqueeze(0).expand(4, *x.shape))
    assert 0.05 < want.mean() < 0.9
    assert torch.equal(got, want)


def test_batchnorm_folding_matches_conv_then_batchnorm():
    torch.manual_seed(4)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=True), nn.BatchNorm2d(5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3)
    bn.weight.data.uniform_(-2, 2)
    bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    weight, bias = fold_batchnorm(conv, bn.eval())
    folded = nn.functional.conv2d(x, torch.from_numpy(weight), torch.from_numpy(bias), padding=1)
    torch.testing.assert_close(folded, bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("neuron, node_type", [
    (LIF(tau=2.3), "LIF"),
    (LIF(tau=3.7, decay_input=False, v_threshold=0.8), "LIF"),
    (IF(v_threshold=0.7), "IF"),
    (Leaky(beta=0.8, reset="zero"), "LIF"),
    (Leaky(beta=torch.linspace(0.2, 0.95, 5), threshold=0.9, reset="zero"), "LIF"),
    (Leaky(beta=1.0, reset="zero"), "IF"),
])
def test_each_neuron_round_trips_exactly_in_float64(neuron, node_type, tmp_path):
    torch.manual_seed(5)
    net = seq(nn.Linear(6, 5), neuron).double()
    graph, report = to_nir(net, (6,), dt=1e-4)
    assert report.exact and type(graph.nodes["layer_1"]).__name__ == node_type
    rebuilt = from_nir(_reread(graph, tmp_path), dtype=torch.float64)
    back = rebuilt[1]
    assert type(back) is type(neuron)
    for attr in ("tau", "decay_input", "v_threshold", "v_reset", "threshold", "reset"):
        assert getattr(back, attr, None) == getattr(neuron, attr, None), attr
    if isinstance(neuron, Leaky):
        assert torch.equal(back.beta, neuron.beta)
    x = torch.randn(40, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x = 3 * x + 1
    want = net(x)
    assert 0.02 < want.mean() < 0.95
    assert torch.equal(rebuilt(x), want)


def test_leaky_parameters_follow_the_snntorch_mapping():
    graph, _ = to_nir(seq(nn.Linear(3, 2), Leaky(beta=0.75, reset="zero")), (3,), dt=1e-4)
    lif = graph.nodes["layer_1"]
    np.testing.assert_allclose(lif.tau, 1e-4 / 0.25)         # τ = dt / (1 − β)
    np.testing.assert_allclose(lif.r, 4.0)                    # r = τ / dt: input unscaled
    np.testing.assert_array_equal(lif.v_leak, 0.0)


@pytest.mark.parametrize("beta", [0.95, 0.97, 0.99, 0.999])
def test_leaky_with_beta_near_one_reads_back(beta, tmp_path):
    # β = 0.97 rounds to 1 at one digit, where τ = dt/(1 − β) divided by zero (issue: a bare
    # ZeroDivisionError from from_nir)
    torch.manual_seed(0)
    net = seq(nn.Linear(4, 3), Leaky(beta, reset="zero"))
    graph, report = to_nir(net, (4,), dt=1e-4)
    rebuilt = from_nir(_reread(graph, tmp_path))
    assert report.exact
    assert rebuilt[1].beta.item() == torch.tensor(beta).item()
    x = torch.rand(30, 5, 4) * 2
    assert torch.equal(rebuilt(x), net(x))


def test_leaky_node_with_tau_below_dt_is_refused():
    node = nir.LIF(tau=np.full(2, 5e-5), r=np.full(2, 0.5), v_leak=np.zeros(2),
                   v_reset=np.zeros(2), v_threshold=np.ones(2))
    with pytest.raises(NIRError, match="at least dt"):
        from_nir(nir.NIRGraph.from_list(node), dt=1e-4)


def test_from_nir_reads_dt_from_the_graph_and_checks_an_explicit_one(tmp_path):
    graph, _ = to_nir(seq(nn.Linear(4, 3), IF(), nn.Linear(3, 2), LIF(tau=5.0)), (4,), dt=1e-3)
    graph = _reread(graph, tmp_path)
    assert from_nir(graph)[3].tau == 5.0
    with pytest.raises(NIRError, match="dt"):
        from_nir(graph, dt=1e-4)


def test_max_pool_csnn_is_refused_by_default_naming_each_layer():
    with pytest.raises(NotExportableError) as err:
        to_nir(models.build("csnn", channels=4), MNIST)
    msg = str(err.value)
    assert "'body.1'" in msg and "'body.5'" in msg and "max pooling" in msg
    assert "--approximate" in msg


def test_max_pool_csnn_approximate_reports_and_keeps_every_weight(tmp_path):
    net = _active_csnn("max")
    graph, report = to_nir(net, MNIST, approximate=True)
    assert [(a.layer, a.kind, a.exported_as) for a in report.approximations] == [
        ("body.1", "max-pool", "SumPool2d"), ("body.5", "max-pool", "SumPool2d")]
    assert _holds(graph, net.body[7].module.weight) and _holds(graph, net.body[9].module.weight)
    for conv, bn in ((net.stem[0], net.stem[1]), (net.body[2].module, net.body[3].module)):
        weight, bias = fold_batchnorm(conv, bn)
        assert _holds(graph, torch.from_numpy(weight)) and _holds(graph, torch.from_numpy(bias))
    rebuilt = from_nir(_reread(graph, tmp_path))
    pools = [m.module for m in rebuilt if isinstance(getattr(m, "module", None), nn.AvgPool2d)]
    assert [p.divisor_override for p in pools] == [1, 1]


def test_sum_pool_node_reads_back_as_window_sums():
    graph = nir.NIRGraph.from_list(nir.SumPool2d(kernel_size=np.array([2, 2]),
                                                 stride=np.array([2, 2]),
                                                 padding=np.array([0, 0])), type_check=False)
    net = from_nir(graph)
    x = torch.arange(16.0).reshape(1, 1, 1, 4, 4)
    assert net(x).flatten().tolist() == [0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13,
                                         10 + 11 + 14 + 15]


@pytest.mark.parametrize("recurrence", ["linear", "one_to_one", "conv"])
def test_rleaky_is_refused_then_exported_approximately_with_every_weight(recurrence, tmp_path):
    torch.manual_seed(7)
    net = models.build("rleaky", recurrence=recurrence, steps=3)
    with pytest.raises(NotExportableError, match="'hidden'.*subtracts the threshold"):
        to_nir(net, MNIST)
    graph, report = to_nir(net, MNIST, approximate=True)
    kinds = [(a.layer, a.kind) for a in report.approximations]
    assert ("hidden", "recurrent-reset") in kinds and ("output", "membrane-output") in kinds
    for name, p in net.named_parameters():
        if name.endswith("recurrent.weight") and recurrence == "one_to_one":
            p = torch.diag(p)
        assert _holds(graph, p), name
    sub = graph.nodes["hidden"]
    assert set(sub.edges) >= {("lif", "w_rec"), ("w_rec", "lif")}
    rebuilt = from_nir(_reread(graph, tmp_path))
    assert sum(isinstance(m, Recurrent) for m in rebuilt) == 2
    assert rebuilt(torch.rand(3, 2, *MNIST)).shape == (3, 2, 10)


def test_recurrent_subgraph_semantics_by_hand():
    """S[t] = Leaky(X[t] + w·S[t−1]), reset to zero: U = .8, 1.2 (spike), 0 + .6, .3."""
    lif = nir.LIF(tau=np.array([2e-4]), r=np.array([2.0]), v_leak=np.zeros(1),
                  v_threshold=np.ones(1), v_reset=np.zeros(1))
    sub = nir.NIRGraph(nodes={"input": nir.Input(np.array([1])), "lif": lif,
                              "w": nir.Linear(weight=np.array([[0.6]])),
                              "output": nir.Output(np.array([1]))},
                       edges=[("input", "lif"), ("lif", "w"), ("w", "lif"), ("lif", "output")])
    net = from_nir(nir.NIRGraph.from_list(sub))
    x = torch.tensor([0.8, 0.8, 0.0, 0.0]).view(4, 1, 1)
    assert net(x).flatten().tolist() == [0.0, 1.0, 0.0, 0.0]
    rleaky = RLeaky(beta=0.5, features=1, recurrence="one_to_one")
    rleaky.recurrent.weight.data.fill_(0.6)
    assert rleaky(x).flatten().tolist() == [0.0, 1.0, 0.0, 0.0]
    # the membranes differ: RLeaky subtracts (U = .6 + .6 − 1 = .2, then .1), NIR resets to 0
    assert rleaky.v.item() == pytest.approx(0.1)
    assert net[0].neuron.v.item() == pytest.approx(0.3)
    SF.reset(net)
    assert net[0].spikes is None and net[0].neuron.v is None


@pytest.mark.parametrize("neuron, kind", [
    (Leaky(beta=0.9), "subtract-reset"),
    (IF(v_reset=None), "soft-reset"),
    (LIF(v_reset=-0.2), "initial-state"),
    (Leaky(beta=0.9, reset="zero", output="both"), "membrane-output"),
])
def test_inexact_neurons_are_refused_then_reported(neuron, kind):
    net = seq(nn.Linear(4, 3), neuron)
    with pytest.raises(NotExportableError, match="layer '1'"):
        to_nir(net, (4,))
    _, report = to_nir(net, (4,), approximate=True)
    assert [(a.layer, a.kind) for a in report.approximations] == [("1", kind)]


def test_layers_without_nir_form_are_refused_even_when_approximating():
    with pytest.raises(NotExportableError, match=r"layer '1' \(ReLU\)"):
        to_nir(seq(nn.Linear(4, 3), nn.ReLU()), (4,), approximate=True)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * 2

    with pytest.raises(NotExportableError, match="own forward"):
        to_nir(Custom(), (4,), approximate=True)


def test_report_is_written_as_json(tmp_path):
    _, report = to_nir(models.build("csnn", channels=4), MNIST, dt=2e-4, approximate=True)
    data = json.loads(report.write(tmp_path / "r.json").read_text())
    assert data["exact"] is False and data["dt"] == 2e-4 and data["input_shape"] == [1, 28, 28]
    assert [a["layer"] for a in data["approximations"]] == ["body.1", "body.5"]
    assert data["nodes"]["body_1"] == "body.1 (MaxPool2d)"


def test_from_nir_errors_name_the_file_or_node(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        from_nir(tmp_path / "missing.nir")
    (tmp_path / "junk.nir").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable NIR file"):
        from_nir(tmp_path / "junk.nir")
    cuba = nir.CubaLIF(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2),
                       v_threshold=np.ones(2))
    with pytest.raises(NIRError, match="CubaLIF"):
        from_nir(nir.NIRGraph.from_list(cuba))
    fork = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([2])), "a": nir.Scale(np.ones(2)),
               "b": nir.Scale(np.ones(2)), "output": nir.Output(np.array([2]))},
        edges=[("input", "a"), ("input", "b"), ("a", "output"), ("b", "output")])
    with pytest.raises(NIRError, match="feeds 2 nodes"):
        from_nir(fork)


def test_a_folder_given_as_the_nir_file_is_named_a_folder(tmp_path):
    (tmp_path / "run.nir").mkdir()
    with pytest.raises(DataError, match=r"^NIR file .*run\.nir is a folder, not a file; pass the "
                       r"path of a \.nir file$"):
        from_nir(tmp_path / "run.nir")
