"""Input jitter (``train.jitter``; Hinton et al. 2015, Sec. 3): shifts by whole pixels, at most
``max_shift`` along each axis, zero fill, drawn from the run's generator."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lifelong import Recipe, TrainConfig, fit
from lifelong.data.augment import random_translate, translate
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario
from lifelong.nn import ModelConfig, build_model


def _shift_by_hand(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = img[i - dy, j - dx], zero outside (one image [C, H, W]), by slicing."""
    out = torch.zeros_like(img)
    h, w = img.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_translate_matches_a_shift_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 2, 6, 7, generator=g)
    dy, dx = torch.tensor([0, 1, -2, 2, -1]), torch.tensor([0, -2, 1, 2, 0])
    out = translate(x, dy, dx, 2)
    assert out.shape == x.shape
    for n in range(5):
        torch.testing.assert_close(out[n], _shift_by_hand(x[n], int(dy[n]), int(dx[n])))
    assert torch.equal(out[0], x[0])  # no shift: unchanged


def test_random_translate_shifts_each_image_by_at_most_max_shift() -> None:
    # one lit pixel in the middle of each 9x9 image: its new position is the shift
    b, m = 2000, 2
    x = torch.zeros(b, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = random_translate(x, m, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    assert torch.equal(out.sum((1, 2, 3)), torch.ones(b))  # the pixel stays inside, moved
    pos = out.flatten(1).argmax(1)
    dy, dx = pos // 9 - 4, pos % 9 - 4
    assert int(dy.abs().max()) == m and int(dx.abs().max()) == m
    # every one of the 25 shifts occurs, each about equally often (1/25 of 2000 = 80)
    counts = torch.bincount((dy + m) * (2 * m + 1) + dx + m, minlength=25)
    assert counts.numel() == 25 and int(counts.min()) > 40 and int(counts.max()) < 130


def test_random_translate_is_drawn_from_the_generator() -> None:
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = random_translate(x, 2, torch.Generator().manual_seed(7))
    b = random_translate(x, 2, torch.Generator().manual_seed(7))
    c = random_translate(x, 2, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    assert random_translate(x, 0, gen) is x  # 0: unchanged, and nothing drawn
    assert torch.equal(gen.get_state(), state)


def test_random_translate_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="jitter must be >= 0 pixels, got -1"):
        random_translate(torch.zeros(2, 1, 4, 4), -1)
    with pytest.raises(ValueError, match=r"images \[B, C, H, W\], got shape \[2, 16\]"):
        random_translate(torch.zeros(2, 16), 1)
    with pytest.raises(ValueError, match="train.jitter must be >= 0 pixels, got -2"):
        TrainConfig(jitter=-2).validate()


def _fit(scenario: Scenario, jitter: int) -> torch.Tensor:
    layout = Layout.for_scenario(scenario, "class")
    torch.manual_seed(0)
    model = build_model(scenario, layout, ModelConfig(hidden=(16,)))
    fit(model, scenario, layout, Recipe("plain"),
        TrainConfig(iterations=5, progress="off", jitter=jitter), seed=0)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_the_loop_jitters_training_batches_reproducibly(split_digits: Scenario) -> None:
    one = dataclasses.replace(split_digits, tasks=split_digits.tasks[:1])
    plain, jittered, again = _fit(one, 0), _fit(one, 1), _fit(one, 1)
    assert torch.equal(jittered, again)
    assert not torch.equal(plain, jittered)


def test_jitter_is_a_train_option_checked_where_it_is_set() -> None:
    from lifelong.config import make_config

    assert make_config("split-digits", "finetune", overrides={"train.jitter": "2"}) \
        .train.jitter == 2
    with pytest.raises(ValueError, match="train.jitter must be >= 0, got -1"):
        make_config("split-digits", "finetune", overrides={"train.jitter": "-1"})
