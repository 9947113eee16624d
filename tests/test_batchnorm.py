"""RepeatedBatchNorm2d: one input standing for T identical copies, as a multi-step BN sees them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikeforge.batchnorm import RepeatedBatchNorm2d


@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_batchnorm_over_the_concatenated_copies(momentum):
    torch.manual_seed(0)
    ours, ref = RepeatedBatchNorm2d(3, momentum=momentum), nn.BatchNorm2d(3, momentum=momentum)
    ref.load_state_dict(ours.state_dict())
    for _ in range(3):
        x = torch.randn(2, 3, 5, 4) * 3 + 1
        y = ours(x, 4)
        torch.testing.assert_close(y.repeat(4, 1, 1, 1), ref(x.repeat(4, 1, 1, 1)))
    # unbiased with 4·2·5·4 = 160 samples: ×160/159, where one copy's 40 gives ×40/39
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-6, atol=1e-7)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 3


def test_running_variance_by_hand():
    bn = RepeatedBatchNorm2d(1, momentum=0.5)
    x = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1)  # mean 1, biased variance 1
    bn(x, 3)  # 6 samples: unbiased 6/5
    assert bn.running_mean.item() == pytest.approx(0.5)
    assert bn.running_var.item() == pytest.approx(0.5 * 1 + 0.5 * 6 / 5)


def test_one_copy_eval_mode_and_gradients_are_plain_batchnorm():
    torch.manual_seed(1)
    ours, ref = RepeatedBatchNorm2d(2), nn.BatchNorm2d(2)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    assert torch.equal(ours(x), ref(x))
    assert torch.equal(ours.running_var, ref.running_var)
    x2 = x.detach().clone().requires_grad_()
    (ours(x, 4) * torch.arange(96.0).view(3, 2, 4, 4)).sum().backward()
    (ref(x2) * torch.arange(96.0).view(3, 2, 4, 4)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    ref.load_state_dict(ours.state_dict())
    ours.eval(), ref.eval()
    assert torch.equal(ours(x, 4), ref(x))  # the running statistics, copies or not
    with pytest.raises(ValueError, match="repeats"):
        ours(x, 0)
