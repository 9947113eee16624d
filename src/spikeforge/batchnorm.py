"""BatchNorm of one input that stands for several identical copies (a static image at T steps).

Direct encoding feeds the same image at every time step, so the first Conv-BN block runs once on
``[B, C, H, W]`` and is broadcast over T (DESIGN.md). The normalisation is then the same as over
the T·B copies a multi-step reference net sees (their mean and biased variance are equal), but
PyTorch's running variance is the *unbiased* batch variance, ``var · n/(n − 1)`` for n samples per
channel (``torch.nn.BatchNorm2d``'s documentation): n = B·H·W here against T·B·H·W in the
reference, which left the running variance 4e-4 apart at T = 4, B = 2 (SpikingJelly's
conv_fashion_mnist net, issue found by comparing against it). :class:`RepeatedBatchNorm2d`
updates its running statistics with the copies' sample count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RepeatedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose ``forward(x, repeats)`` treats ``x`` [B, C, H, W] as ``repeats``
    identical copies of itself: the same output as over the concatenated copies, and running
    statistics updated as from ``repeats``·B·H·W samples per channel. With ``repeats`` 1, in
    eval mode or without running statistics it is ``nn.BatchNorm2d`` exactly.

    Raises:
        ValueError: ``repeats`` < 1, or (from torch) a training batch of one value per channel.
    """

    def forward(self, x: Tensor, repeats: int = 1) -> Tensor:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if repeats == 1 or not (self.training and self.track_running_stats):
            return super().forward(x)
        self._check_input_dim(x)
        self.num_batches_tracked.add_(1)
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                    else self.momentum)
        # momentum 1 into fresh buffers: torch's own batch mean and unbiased variance (n samples)
        mean = torch.zeros_like(self.running_mean)
        var = torch.ones_like(self.running_var)
        out = F.batch_norm(x, mean, var, self.weight, self.bias, True, 1.0, self.eps)
        n = x.numel() // x.shape[1]
        total = n * repeats
        with torch.no_grad():
            self.running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)
            self.running_var.mul_(1.0 - momentum).add_(
                var, alpha=momentum * (n - 1) / n * total / (total - 1))
        return out
