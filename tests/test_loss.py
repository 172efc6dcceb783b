"""uiunet.loss: deep-supervision BCE (release), Soft-IoU (BasicIRSTD), their sum and the registry."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from uiunet.loss import LOSSES, DeepSupervisionLoss, SoftIoULoss, SumLoss, as_outputs, get_loss

LN2 = math.log(2)


def half_mask(shape=(2, 1, 4, 4)):
    m = torch.zeros(shape)
    m[..., : shape[-2] // 2, :] = 1
    return m


def test_seven_zero_logits_cost_seven_ln2():
    mask = half_mask()
    outs = tuple(torch.zeros_like(mask) for _ in range(7))
    assert DeepSupervisionLoss()(outs, mask).item() == pytest.approx(7 * LN2, rel=1e-6)
    assert get_loss("bce")(list(outs), mask).item() == pytest.approx(7 * LN2, rel=1e-6)


def test_bce_worked_value_logit_ln3():
    # p = 3/4: a positive pixel costs -ln(3/4), a negative one -ln(1/4); half the mask is positive
    mask = half_mask()
    z = torch.full_like(mask, math.log(3))
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert DeepSupervisionLoss()(z, mask).item() == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(DeepSupervisionLoss().components([z, torch.zeros_like(z)], mask).numpy(), [expected, LN2], rtol=1e-6)


def test_bce_weights():
    mask = half_mask()
    z = torch.full_like(mask, math.log(3))
    outs = [z] + [torch.zeros_like(mask)] * 6
    expected = (-math.log(0.75) - math.log(0.25)) / 2 * 2.0 + 0.5 * LN2 + 0.25 * LN2
    loss = DeepSupervisionLoss([2, 0.5, 0.25, 0, 0, 0, 0])(outs, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="2 weights for 7 outputs"):
        DeepSupervisionLoss([1, 1])(outs, mask)


def test_bce_equals_release_bceloss_on_sigmoids():
    g = torch.Generator().manual_seed(1)
    outs = [torch.randn(3, 1, 9, 7, generator=g) * 4 for _ in range(7)]
    mask = (torch.rand(3, 1, 9, 7, generator=g) > 0.8).float()
    release = sum(nn.BCELoss()(torch.sigmoid(o), mask) for o in outs)
    assert DeepSupervisionLoss()(outs, mask).item() == pytest.approx(release.item(), rel=1e-5)


def test_bce_saturated_logits_stay_finite_with_gradient():
    z = torch.tensor([[[[100.0, -100.0]]]], requires_grad=True)
    mask = torch.tensor([[[[0.0, 1.0]]]])   # confidently wrong on both pixels
    loss = DeepSupervisionLoss()(z, mask)
    loss.backward()
    assert loss.item() == pytest.approx(100.0, rel=1e-4)
    np.testing.assert_allclose(z.grad.numpy().ravel(), [0.5, -0.5], rtol=1e-6)   # (sigmoid(z) - y) / 2 pixels


def test_softiou_worked_values():
    y = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    zero = torch.zeros_like(y)
    perfect = (2 * y - 1) * 50
    # p = 1/2: (0.5 + 1) / (2 + 1 - 0.5 + 1) = 3/7
    assert SoftIoULoss()(zero, y).item() == pytest.approx(4 / 7, rel=1e-6)
    assert SoftIoULoss()(perfect, y).item() == pytest.approx(0.0, abs=1e-6)
    assert SoftIoULoss()((zero, perfect), y).item() == pytest.approx(2 / 7, rel=1e-6)   # averaged, not summed
    assert SoftIoULoss(smooth=0)(zero, y).item() == pytest.approx(1 - 0.5 / 2.5, rel=1e-6)


def test_softiou_pools_the_whole_batch():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 1, 6, 6, generator=g)
    y = (torch.rand(4, 1, 6, 6, generator=g) > 0.7).float()
    p, yn = torch.sigmoid(z).double().numpy(), y.double().numpy()
    inter = (p * yn).sum()
    expected = 1 - (inter + 1) / (p.sum() + yn.sum() - inter + 1)   # one ratio over the batch, not a mean per image
    assert SoftIoULoss()(z, y).item() == pytest.approx(expected, rel=1e-5)


def test_sum_and_registry():
    y = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    zero = torch.zeros_like(y)
    assert sorted(LOSSES) == ["bce", "bce+softiou", "softiou"]
    assert get_loss("bce+softiou")(zero, y).item() == pytest.approx(LN2 + 4 / 7, rel=1e-6)
    assert get_loss("bce+softiou", mix=(0.5, 2))(zero, y).item() == pytest.approx(0.5 * LN2 + 8 / 7, rel=1e-6)
    assert get_loss("softiou")([zero] * 7, y).item() == pytest.approx(4 / 7, rel=1e-6)
    assert SumLoss([SoftIoULoss(), SoftIoULoss()], [1, 3])(zero, y).item() == pytest.approx(16 / 7, rel=1e-6)
    with pytest.raises(KeyError, match="unknown loss 'dice'"):
        get_loss("dice")


@pytest.mark.parametrize("name", ["bce", "softiou", "bce+softiou"])
def test_every_output_gets_a_gradient(name):
    g = torch.Generator().manual_seed(3)
    outs = tuple(torch.randn(2, 1, 16, 16, generator=g, requires_grad=True) for _ in range(7))
    y = torch.zeros(2, 1, 16, 16)
    y[:, :, 4:7, 8:11] = 1
    loss = get_loss(name)(outs, y)
    assert loss.shape == torch.Size([]) and torch.isfinite(loss)
    for k, gr in enumerate(torch.autograd.grad(loss, outs)):
        assert torch.isfinite(gr).all() and gr.abs().sum() > 0, f"output {k}"


def test_bad_input():
    y = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"output 1 has shape \(2, 1, 4, 4\) but the mask has shape \(2, 1, 8, 8\)"):
        DeepSupervisionLoss()([torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4)], y)
    with pytest.raises(ValueError, match="output 0 has shape"):
        SoftIoULoss()(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(TypeError, match="non-empty sequence"):
        as_outputs([])
    with pytest.raises(TypeError, match="mask must be a tensor"):
        DeepSupervisionLoss()(torch.zeros(1, 1, 2, 2), np.zeros((1, 1, 2, 2)))
