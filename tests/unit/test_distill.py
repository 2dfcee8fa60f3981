"""kd_loss (Hinton et al. 2015) and its use by LwF (Li & Hoiem 2016): reference values from the
seed, the T^2 switch's effect on gradient scale, masks, and the LwF renormalisation identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong.terms.distill import kd_loss, soft_targets


@pytest.mark.parametrize("T, expected", [(1.0, (0.091, 99.91)), (5.0, (19.78, 80.22)),
                                         (10.0, (33.18, 66.82))])
def test_seed_vector_percentages(T: float, expected: tuple[float, float]) -> None:
    # METHODS.md / the seed slides: z = [3, 10]
    q = soft_targets(torch.tensor([3.0, 10.0]), T) * 100
    assert q[0].item() == pytest.approx(expected[0], abs=0.005)
    assert q[1].item() == pytest.approx(expected[1], abs=0.005)


def test_soft_loss_is_zero_when_student_equals_teacher() -> None:
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    for T in (1.0, 2.0, 20.0):
        assert kd_loss(z, z.clone(), temperature=T).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z, z + 1.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant


def test_soft_term_value_is_kl_divergence() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    T = 3.0
    p, q = torch.softmax(t / T, 1), torch.softmax(s / T, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    assert kd_loss(s, t, temperature=T, t2=False).item() == pytest.approx(kl.item(), rel=1e-5)
    assert kd_loss(s, t, temperature=T).item() == pytest.approx(9 * kl.item(), rel=1e-5)
    assert kd_loss(s, t, temperature=T, soft_weight=0.25, t2=False).item() == pytest.approx(
        0.25 * kl.item(), rel=1e-5)


def test_hard_term_and_weights() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    ce = F.cross_entropy(s, y).item()
    assert kd_loss(s, targets=y).item() == pytest.approx(ce, rel=1e-6)
    soft = kd_loss(s, t, temperature=2.0).item()
    both = kd_loss(s, t, y, temperature=2.0, soft_weight=0.7, hard_weight=0.3).item()
    assert both == pytest.approx(0.7 * soft + 0.3 * ce, rel=1e-5)


def _soft_grad_norm(T: float, t2: bool) -> float:
    s = torch.tensor([[1.0, -0.5, 0.3, 2.0]], requires_grad=True)
    t = torch.tensor([[0.2, 0.4, -1.0, 1.5]])
    kd_loss(s, t, temperature=T, t2=t2).backward()
    assert s.grad is not None
    return s.grad.norm().item()


def test_gradient_scales_as_one_over_t_squared_without_t2() -> None:
    # high-temperature limit (Hinton et al. 2015, Sec. 2.1): dC/dz ~ (z - v) / (N T^2)
    g20, g40, g80 = (_soft_grad_norm(T, t2=False) for T in (20.0, 40.0, 80.0))
    assert g20 / g40 == pytest.approx(4.0, rel=0.02)
    assert g40 / g80 == pytest.approx(4.0, rel=0.01)


def test_gradient_scale_is_t_independent_with_t2() -> None:
    g20, g40, g80 = (_soft_grad_norm(T, t2=True) for T in (20.0, 40.0, 80.0))
    assert g20 / g40 == pytest.approx(1.0, rel=0.02)
    assert g40 / g80 == pytest.approx(1.0, rel=0.01)
    # and the limit is (z - v) / N with zero-mean logits: here z - v centred
    s = torch.tensor([1.0, -0.5, 0.3, 2.0])
    v = torch.tensor([0.2, 0.4, -1.0, 1.5])
    d = (s - s.mean()) - (v - v.mean())
    assert g80 == pytest.approx((d / 4).norm().item(), rel=0.01)


def test_lwf_power_renormalisation_equals_softmax_over_t() -> None:
    # Li & Hoiem 2016, Eq. 2: y'_i = y_i^(1/T) / sum_j y_j^(1/T) with y = softmax(z)
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for T in (1.0, 2.0, 4.0):
        y = torch.softmax(z, 1)
        powered = y.pow(1.0 / T)
        renorm = powered / powered.sum(1, keepdim=True)
        torch.testing.assert_close(renorm, soft_targets(z, T), rtol=1e-12, atol=1e-12)


def test_mask_restricts_the_soft_term_to_chosen_units() -> None:
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    mask = torch.tensor([True, True, False, True, False])
    masked = kd_loss(s, t, temperature=2.0, mask=mask)
    direct = kd_loss(s[:, mask], t[:, mask], temperature=2.0)
    assert masked.item() == pytest.approx(direct.item(), rel=1e-6)
    # units outside the mask get no gradient from the soft term
    s.requires_grad_(True)
    kd_loss(s, t, temperature=2.0, mask=mask).backward()
    assert s.grad is not None
    assert torch.all(s.grad[:, ~mask] == 0) and torch.any(s.grad[:, mask] != 0)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs teacher logits"),
    ({"teacher": torch.zeros(2, 4)}, "same shape"),
    ({"teacher": torch.zeros(2, 3), "temperature": 0.0}, "temperature must be positive"),
    ({"teacher": torch.zeros(2, 3), "mask": torch.tensor([1, 0, 1])}, "mask must be a bool"),
    ({"teacher": torch.zeros(2, 3), "mask": torch.zeros(3, dtype=torch.bool)}, "selects no"),
    ({"targets": torch.zeros(3, dtype=torch.long)}, "targets must be"),
])
def test_bad_input_is_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kd_loss(torch.zeros(2, 3), **kwargs)


def test_teacher_over_fewer_units_pads_its_distribution_with_zeros() -> None:
    # van de Ven & Tolias 2019 (loss_fn_kd): the old model's softmax over the old classes,
    # zeros appended for the new classes; the student's softmax covers all of them
    g = torch.Generator().manual_seed(5)
    s = torch.randn(4, 5, generator=g, requires_grad=True)
    t = torch.randn(4, 3, generator=g)
    T = 2.0
    p = torch.softmax(t / T, 1)
    log_q = torch.log_softmax(s / T, 1)
    expected = (p * (p.log() - log_q[:, :3])).sum(1).mean() * T * T
    loss = kd_loss(s, t, temperature=T)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert s.grad is not None and bool((s.grad[:, 3:] > 0).all())  # new units pushed down
    with pytest.raises(ValueError, match="either a mask or a teacher over fewer units"):
        kd_loss(s, t, mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="or fewer units"):
        kd_loss(s[:, :2], t)
