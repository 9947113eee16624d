"""Real NIR clients read our files and fire the same spikes (each test skips when its client is
absent). Their documented conventions, applied here:

- snnTorch (``snntorch.import_nir.import_from_nir``): dt = 1e-4 s fixed; nir.LIF becomes
  Leaky(β = 1 − dt/τ, threshold = v_th/(r·dt/τ), reset to zero); its Flatten keeps NIR's axes
  (no batch axis), so it runs one sample at a time; state lives in the module (init_hidden).
  Fires when U > threshold (NIR's rule).
- Norse (``norse.torch.from_nir``): pass ``dt``; forward(x, state) -> (out, state). Fires when
  v > v_th (NIR's rule).
- SpikingJelly (``nir_exchange.import_from_nir``): pass ``dt``; forward(x, state) -> (out, state).
  Fires when v ≥ v_threshold (its own rule, also on NIR files).

Requirements: ``pip install -e ".[clients]"`` (snntorch, nirtorch, loguru) and
``pip install --no-deps norse spikingjelly`` (their declared requirements would replace torch).
"""

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from spikeforge import models  # noqa: E402
from spikeforge.export import from_nir, to_nir  # noqa: E402
from spikeforge.layer import seq  # noqa: E402
from spikeforge.neuron import IF, LIF  # noqa: E402

T, B, DT = 25, 3, 1e-4


@pytest.fixture(scope="module")
def fc_lif(tmp_path_factory):
    """(file, input [T, B, 1, 28, 28], spikeforge's spikes [T, B, 10])."""
    torch.manual_seed(0)
    net = models.build("fc-lif")
    with torch.no_grad():
        net.net[1].module.weight.mul_(8)
    graph, report = to_nir(net, (1, 28, 28), dt=DT)
    assert report.exact
    path = tmp_path_factory.mktemp("nir") / "fc_lif.nir"
    nir.write(path, graph)
    x = (torch.rand(T, B, 1, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    with torch.no_grad():
        spikes = net(x)
    assert 0.05 < spikes.mean() < 0.9
    return path, x, spikes


def _stateful_run(module, x_seq):
    state, out = None, []
    for x in x_seq:
        y, state = module(x, state)
        out.append(y)
    return torch.stack(out)


def test_snntorch_imports_our_fc_lif(fc_lif):
    pytest.importorskip("nirtorch")  # snnTorch's NIR import needs it
    pytest.importorskip("snntorch")
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    path, x, want = fc_lif
    net = import_from_nir(nir.read(path))
    per_sample = []
    for b in range(B):
        snntorch.utils.reset(net)
        with torch.no_grad():
            per_sample.append(torch.stack([net(x[t, b])[0] for t in range(T)]))
    assert torch.equal(torch.stack(per_sample, 1), want)


def test_norse_imports_our_fc_lif(fc_lif):
    norse = pytest.importorskip("norse.torch")
    path, x, want = fc_lif
    net = norse.from_nir(nir.read(path), dt=DT)
    per_sample = []
    for b in range(B):
        with torch.no_grad():
            per_sample.append(_stateful_run(net, x[:, b]))
    assert torch.equal(torch.stack(per_sample, 1), want)


def test_spikingjelly_imports_our_fc_lif_and_avg_pool_csnn(fc_lif, tmp_path):
    pytest.importorskip("loguru")
    exchange = pytest.importorskip("spikingjelly.activation_based.nir_exchange")
    path, x, want = fc_lif
    with torch.no_grad():
        assert torch.equal(_stateful_run(exchange.import_from_nir(path, dt=DT), x), want)

    torch.manual_seed(1)
    csnn = models.build("csnn", channels=8, pool="avg").eval()
    with torch.no_grad():
        for bn in (csnn.stem[1], csnn.body[3].module):
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.uniform_(0.0, 0.5)
        for layer in (csnn.body[7].module, csnn.body[9].module):
            layer.weight.mul_(6)
        image = torch.rand(B, 1, 28, 28, generator=torch.Generator().manual_seed(2))
        want = csnn(image)
        graph, _ = to_nir(csnn, (1, 28, 28), dt=DT)
        nir.write(tmp_path / "csnn.nir", graph)
        got = _stateful_run(exchange.import_from_nir(tmp_path / "csnn.nir", dt=DT),
                            image.expand(4, *image.shape))
    assert want.sum() > 0 and torch.equal(got, want)


def test_a_leaky_written_by_snntorch_reads_back_spike_for_spike():
    pytest.importorskip("nirtorch")
    snn = pytest.importorskip("snntorch")
    import snntorch.utils
    from snntorch.export_nir import _extract_snntorch_module

    torch.manual_seed(3)
    fc = torch.nn.Linear(784, 10)
    with torch.no_grad():
        fc.weight.mul_(4)
    leaky = snn.Leaky(beta=torch.full((10,), 0.9), threshold=torch.ones(10), init_hidden=True,
                      reset_mechanism="zero")
    # snnTorch's own node converter (its export_to_nir trips over nir 1.0.8's type checks)
    graph = nir.NIRGraph.from_list(
        nir.Flatten(input_type=np.array([1, 28, 28]), start_dim=0),
        _extract_snntorch_module(fc), _extract_snntorch_module(leaky))
    reference = torch.nn.Sequential(torch.nn.Flatten(), fc, leaky)
    x = (torch.rand(T, B, 1, 28, 28, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    snntorch.utils.reset(reference)
    with torch.no_grad():
        want = torch.stack([reference(x[t]) for t in range(T)])
        got = from_nir(graph)(x)
    assert 0.05 < want.mean() < 0.9
    assert torch.equal(got, want)


def _client(name: str, path):
    """A function running the NIR file ``path`` in client ``name`` on ``[T, 1, 1]`` inputs."""
    if name == "snntorch":
        pytest.importorskip("nirtorch")
        pytest.importorskip("snntorch")
        from snntorch.import_nir import import_from_nir

        net = import_from_nir(nir.read(path))
        return lambda x: torch.stack([net(x[t])[0] for t in range(len(x))])
    if name == "norse":
        norse = pytest.importorskip("norse.torch")
        return lambda x: _stateful_run(norse.from_nir(nir.read(path), dt=DT), x)
    pytest.importorskip("loguru")
    exchange = pytest.importorskip("spikingjelly.activation_based.nir_exchange")
    return lambda x: _stateful_run(exchange.import_from_nir(path, dt=DT), x)


TIES = {"IF": (IF, 0.0625, 16), "LIF": (lambda: LIF(tau=2.0), 2.0, 1)}


@pytest.mark.parametrize("kind, client", [
    ("IF", "norse"), ("IF", "spikingjelly"),            # snnTorch reads IF as a Leaky(β=0.9)
    ("LIF", "snntorch"), ("LIF", "norse"), ("LIF", "spikingjelly"),
])
def test_clients_fire_at_the_tie_step_with_our_moved_threshold(kind, client, tmp_path):
    """The membrane lands exactly on V_th = 1 at ``step`` (IF fed 0.0625: step 16; LIF(τ=2) fed
    2.0: step 1): spikeforge fires there, and so does the client on the exported
    v_threshold = 0.99999994 (snnTorch and Norse fire above it, as NIR defines; SpikingJelly at
    or above it)."""
    make, current, step = TIES[kind]
    neuron = make()
    graph, _ = to_nir(seq(neuron), (1,), dt=DT)
    nir.write(tmp_path / "n.nir", graph)
    run = _client(client, tmp_path / "n.nir")
    x = torch.full((20, 1, 1), current)
    with torch.no_grad():
        want = neuron(x)
        got = run(x)
    assert int(want[:, 0, 0].nonzero()[0]) + 1 == step
    assert torch.equal(got.reshape(want.shape).float(), want)
