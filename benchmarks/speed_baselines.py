"""Plain per-step PyTorch versions of the four recipe models, written the way the reference
tutorials write them: a Python loop over time steps, every layer called once per step, neurons as
a few tensor operations with an arctangent surrogate spike function, state carried by hand.

Each ``make_*`` returns ``(train_step, eval_step)`` closures over the same random batch the
spikeforge side gets; losses and optimizers are the recipe's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ATanSpike(torch.autograd.Function):
    """Θ(x) forward (x ≥ 0, or x > 0 when strict), (α/2)/(1 + (π/2·α·x)²) backward, α = 2."""

    @staticmethod
    def forward(ctx, x, strict):
        ctx.save_for_backward(x)
        return (x > 0).float() if strict else (x >= 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 1.0 / (1 + (math.pi / 2 * 2.0 * x) ** 2), None


def spike(x, strict=False):
    return ATanSpike.apply(x, strict)


def if_step(x, v):
    """SpingJelly IF, hard reset to 0: H = V + X, S = Θ(H − 1), V = H·(1 − S)."""
    h = v + x
    s = spike(h - 1.0)
    return s, h * (1 - s)


def leaky_step(x, u, beta):
    """snnTorch Leaky, subtract reset from the previous membrane (detached); u=None is rest."""
    u = torch.zeros_like(x) if u is None else u
    r = (u.detach() > 1.0).float()
    u = beta * u + x - r
    return spike(u - 1.0, strict=True), u


def _mse_count(spk_rec, y, correct=0.8, incorrect=0.2):
    steps = spk_rec.shape[0]
    onehot = F.one_hot(y, 10).float()
    target = onehot * int(steps * correct) + (1 - onehot) * int(steps * incorrect)
    return F.mse_loss(spk_rec.sum(0), target) / steps


def _steps(model, optimizer, loss_of_batch, predict):
    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of_batch()
        loss.backward()
        optimizer.step()
        return loss.item()

    def eval_step():
        with torch.no_grad():
            predict()

    return train_step, eval_step


def make_fc_lif(x, y, steps, tau=2.0):
    fc = nn.Linear(784, 10, bias=False)
    optimizer = torch.optim.Adam(fc.parameters(), lr=1e-3)

    def forward():
        v = torch.zeros(x.shape[0], 10)
        out_fr = 0.0
        for _ in range(steps):
            encoded = (torch.rand_like(x) <= x).float()
            h = v + (fc(encoded.flatten(1)) - v) / tau
            s = spike(h - 1.0)
            v = h * (1 - s)
            out_fr = out_fr + s
        return out_fr / steps

    return _steps(fc, optimizer, lambda: F.mse_loss(forward(), F.one_hot(y, 10).float()), forward)


class _CSNN(nn.Module):
    def __init__(self, c=64):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.fc1 = nn.Linear(c * 7 * 7, c * 4 * 4, bias=False)
        self.fc2 = nn.Linear(c * 4 * 4, 10, bias=False)

    def forward(self, x, steps):
        v = [0.0] * 4
        out = 0.0
        for _ in range(steps):
            s, v[0] = if_step(self.bn1(self.conv1(x)), v[0])
            s, v[1] = if_step(self.bn2(self.conv2(F.max_pool2d(s, 2))), v[1])
            s, v[2] = if_step(self.fc1(F.max_pool2d(s, 2).flatten(1)), v[2])
            s, v[3] = if_step(self.fc2(s), v[3])
            out = out + s
        return out / steps


def make_csnn(x, y, steps):
    net = _CSNN()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    return _steps(net, optimizer,
                  lambda: F.mse_loss(net(x, steps), F.one_hot(y, 10).float()),
                  lambda: net(x, steps))


class _NmnistCSNN(nn.Module):
    def __init__(self, beta=0.5):
        super().__init__()
        self.beta = beta
        self.conv1, self.conv2 = nn.Conv2d(2, 12, 5), nn.Conv2d(12, 32, 5)
        self.fc = nn.Linear(32 * 5 * 5, 10)

    def forward(self, frames):
        u1 = u2 = u3 = None
        spk_rec = []
        for t in range(frames.shape[0]):
            s1, u1 = leaky_step(F.max_pool2d(self.conv1(frames[t]), 2), u1, self.beta)
            s2, u2 = leaky_step(F.max_pool2d(self.conv2(s1), 2), u2, self.beta)
            s3, u3 = leaky_step(self.fc(s2.flatten(1)), u3, self.beta)
            spk_rec.append(s3)
        return torch.stack(spk_rec)


def make_nmnist_csnn(x, y, steps):
    net = _NmnistCSNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2, betas=(0.9, 0.999))
    return _steps(net, optimizer, lambda: _mse_count(net(x), y), lambda: net(x))


class _RLeakyNet(nn.Module):
    def __init__(self, beta=0.9, hidden=128):
        super().__init__()
        self.beta = beta
        self.fc1, self.rec1 = nn.Linear(784, hidden), nn.Linear(hidden, hidden)
        self.fc2, self.rec2 = nn.Linear(hidden, 10), nn.Linear(10, 10)

    def forward(self, x, steps):
        b = x.shape[0]
        s1, u1 = torch.zeros(b, self.rec1.in_features), torch.zeros(b, self.rec1.in_features)
        s2, u2 = torch.zeros(b, 10), torch.zeros(b, 10)
        spk_rec = []
        for _ in range(steps):
            s1, u1 = leaky_step(self.fc1(x.flatten(1)) + self.rec1(s1), u1, self.beta)
            s2, u2 = leaky_step(self.fc2(s1) + self.rec2(s2), u2, self.beta)
            spk_rec.append(s2)
        return torch.stack(spk_rec)


def make_rleaky(x, y, steps):
    net = _RLeakyNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    return _steps(net, optimizer, lambda: _mse_count(net(x, steps), y), lambda: net(x, steps))


MAKERS = {"fc-lif": make_fc_lif, "csnn": make_csnn, "nmnist-csnn": make_nmnist_csnn,
          "rleaky": make_rleaky}
