"""SpikingJelly and snnTorch versions of the recipe models, each in its own tutorial's style.

SpikingJelly: ``activation_based/examples/lif_fc_mnist.py`` (single-step loop over T with the
Poisson encoder called every step, and its multi-step form) and ``conv_fashion_mnist.py``
(multi-step, image repeated T times). snnTorch: tutorial 5 (fc, ``spikegen.rate``), tutorial 7
(N-MNIST, ``init_hidden`` Sequential called once per frame) and regression tutorial II (RLeaky).
Each ``make_*`` returns ``(train_step, eval_step)`` or raises ImportError when the framework is
absent. Install: ``pip install snntorch`` and ``pip install --no-deps spikingjelly loguru``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from speed_baselines import _steps
from torch import nn


def _sj():
    from spikingjelly.activation_based import encoding, functional, layer, neuron, surrogate

    return encoding, functional, layer, neuron, surrogate


def sj_fc_lif(x, y, steps, multi_step=False):
    encoding, functional, layer, neuron, surrogate = _sj()
    net = nn.Sequential(layer.Flatten(), layer.Linear(784, 10, bias=False),
                        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()))
    encoder = encoding.PoissonEncoder()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    if multi_step:
        functional.set_step_mode(net, "m")

    def forward():
        if multi_step:
            out_fr = net(torch.stack([encoder(x) for _ in range(steps)])).mean(0)
        else:
            out_fr = 0.0
            for _ in range(steps):
                out_fr = out_fr + net(encoder(x))
            out_fr = out_fr / steps
        functional.reset_net(net)
        return out_fr

    return _steps(net, optimizer, lambda: F.mse_loss(forward(), F.one_hot(y, 10).float()),
                  forward)


def sj_csnn(x, y, steps, channels=64):
    _, functional, layer, neuron, surrogate = _sj()
    c = channels

    def if_node():
        return neuron.IFNode(surrogate_function=surrogate.ATan())

    net = nn.Sequential(
        layer.Conv2d(1, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), if_node(),
        layer.MaxPool2d(2, 2),
        layer.Conv2d(c, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), if_node(),
        layer.MaxPool2d(2, 2),
        layer.Flatten(), layer.Linear(c * 7 * 7, c * 4 * 4, bias=False), if_node(),
        layer.Linear(c * 4 * 4, 10, bias=False), if_node(),
    )
    functional.set_step_mode(net, "m")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def forward():
        out_fr = net(x.unsqueeze(0).repeat(steps, 1, 1, 1, 1)).mean(0)
        functional.reset_net(net)
        return out_fr

    return _steps(net, optimizer, lambda: F.mse_loss(forward(), F.one_hot(y, 10).float()),
                  forward)


def snn_fc_lif(x, y, steps):
    import snntorch as snn
    from snntorch import spikegen, surrogate

    fc = nn.Linear(784, 10, bias=False)
    lif = snn.Leaky(beta=0.5, spike_grad=surrogate.atan())
    optimizer = torch.optim.Adam(fc.parameters(), lr=1e-3)

    def forward():
        data = spikegen.rate(x, num_steps=steps)
        mem = lif.init_leaky()
        spk_rec = []
        for t in range(steps):
            spk, mem = lif(fc(data[t].flatten(1)), mem)
            spk_rec.append(spk)
        return torch.stack(spk_rec).mean(0)

    return _steps(fc, optimizer, lambda: F.mse_loss(forward(), F.one_hot(y, 10).float()),
                  forward)


def snn_nmnist_csnn(x, y, steps, beta=0.5):
    import snntorch as snn
    from snntorch import functional as SF
    from snntorch import surrogate, utils

    grad = surrogate.atan()
    net = nn.Sequential(
        nn.Conv2d(2, 12, 5), nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 32, 5), nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(32 * 5 * 5, 10),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True, output=True),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2, betas=(0.9, 0.999))
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)

    def forward():
        spk_rec = []
        utils.reset(net)
        for step in range(x.size(0)):
            spk_out, _ = net(x[step])
            spk_rec.append(spk_out)
        return torch.stack(spk_rec)

    return _steps(net, optimizer, lambda: loss_fn(forward(), y), forward)


class _SnnRLeakyNet(nn.Module):
    def __init__(self, steps, beta=0.9, hidden=128):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        self.steps = steps
        self.fc1 = nn.Linear(784, hidden)
        self.lif1 = snn.RLeaky(beta=beta, linear_features=hidden, spike_grad=surrogate.atan())
        self.fc2 = nn.Linear(hidden, 10)
        self.lif2 = snn.RLeaky(beta=beta, linear_features=10, spike_grad=surrogate.atan())

    def forward(self, x):
        spk1, mem1 = self.lif1.init_rleaky()
        spk2, mem2 = self.lif2.init_rleaky()
        spk_rec = []
        for _ in range(self.steps):
            spk1, mem1 = self.lif1(self.fc1(x.flatten(1)), spk1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), spk2, mem2)
            spk_rec.append(spk2)
        return torch.stack(spk_rec)


def snn_rleaky(x, y, steps):
    from snntorch import functional as SF

    net = _SnnRLeakyNet(steps)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    return _steps(net, optimizer, lambda: loss_fn(net(x), y), lambda: net(x))


#: recipe → {framework name: maker(x, y, steps)}
MAKERS = {
    "fc-lif": {"spikingjelly-ss": sj_fc_lif,
               "spikingjelly-ms": lambda x, y, t: sj_fc_lif(x, y, t, multi_step=True),
               "snntorch": snn_fc_lif},
    "csnn": {"spikingjelly-ms": sj_csnn},
    "nmnist-csnn": {"snntorch": snn_nmnist_csnn},
    "rleaky": {"snntorch": snn_rleaky},
}
