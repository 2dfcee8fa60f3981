"""Backbones, heads and the model (lifelong.nn.backbones, heads, model).

Heads compute only the logits of a contiguous range of output units; slicing must equal the
corresponding columns of the full output, and a multi-head's output must equal its per-task
linear layers concatenated in task order.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario
from lifelong.nn.backbones import MLP, ResNet32, SmallCNN, build_backbone
from lifelong.nn.heads import MultiHead, SingleHead
from lifelong.nn.model import ContinualModel, ModelConfig, build_model


@pytest.fixture
def features() -> torch.Tensor:
    return torch.randn(5, 7, generator=torch.Generator().manual_seed(0))


def test_multihead_is_the_concatenation_of_its_heads(features: torch.Tensor) -> None:
    torch.manual_seed(0)
    head = MultiHead(7, [2, 3, 1])
    assert head.num_units == 6 and head.offsets == (0, 2, 5)
    assert all(isinstance(h, nn.Linear) for h in head.heads)
    expected = torch.cat([F.linear(features, h.weight, h.bias) for h in head.heads], dim=1)
    torch.testing.assert_close(head(features), expected, rtol=0, atol=0)
    assert head.task_modules(1) == [head.heads[1]]


@pytest.mark.parametrize("units", [slice(0, 2), slice(2, 5), slice(5, 6), slice(1, 4),
                                   slice(0, 5), slice(3, 6), slice(None, 4), slice(2, None)])
def test_multihead_units_equal_slicing_the_full_output(features: torch.Tensor,
                                                       units: slice) -> None:
    torch.manual_seed(1)
    head = MultiHead(7, [2, 3, 1])
    full = head(features)
    torch.testing.assert_close(head(features, units=units), full[:, units], rtol=0, atol=1e-6)


@pytest.mark.parametrize("units", [slice(0, 6), slice(0, 2), slice(2, 5), slice(4, 5),
                                   slice(None, 3)])
def test_singlehead_units_equal_slicing_the_full_output(features: torch.Tensor,
                                                        units: slice) -> None:
    torch.manual_seed(2)
    head = SingleHead(7, 6)
    full = head(features)
    torch.testing.assert_close(full, F.linear(features, head.layer.weight, head.layer.bias),
                               rtol=0, atol=0)
    torch.testing.assert_close(head(features, units=units), full[:, units], rtol=0, atol=1e-6)
    assert head.task_modules(0) == head.task_modules(2) == [head.layer]


def test_units_slicing_gives_gradient_only_to_active_rows(features: torch.Tensor) -> None:
    head = SingleHead(7, 6)
    head(features, units=slice(2, 4)).sum().backward()
    g = head.layer.weight.grad
    assert g[2:4].abs().sum() > 0
    assert torch.count_nonzero(g[:2]) == 0 and torch.count_nonzero(g[4:]) == 0
    multi = MultiHead(7, [2, 2])
    multi(features, units=slice(2, 4)).sum().backward()
    assert multi.heads[0].weight.grad is None
    assert multi.heads[1].weight.grad.abs().sum() > 0


def test_heads_call_their_layer_modules(features: torch.Tensor) -> None:
    """Forward hooks on the output layers see every head that computes a unit; a multi-head
    calls only the heads overlapping ``units``."""
    seen: list[nn.Module] = []
    multi = MultiHead(7, [2, 3, 1])
    single = SingleHead(7, 6)
    for m in [*multi.heads, single.layer]:
        m.register_forward_hook(lambda mod, args, out: seen.append(mod))
    multi(features, units=slice(1, 4))
    assert seen == [multi.heads[0], multi.heads[1]]
    seen.clear()
    single(features, units=slice(2, 3))
    assert seen == [single.layer]
    assert multi.output_rows(slice(1, 4)) == [(multi.heads[0], slice(1, 2)),
                                              (multi.heads[1], slice(0, 2))]
    assert multi.output_rows() == [(h, slice(0, s)) for h, s in zip(multi.heads, (2, 3, 1))]
    assert single.output_rows(slice(2, 5)) == [(single.layer, slice(2, 5))]


def test_forward_signature_units_then_targets() -> None:
    """``model(x, units=..., targets=...)``: units is the second argument; targets reach only
    layers that declare ``uses_targets`` (ignored by linear heads)."""
    from lifelong.nn.dhp import DHPSoftmax

    torch.manual_seed(0)
    linear = ContinualModel(MLP(6, (5,)), MultiHead(5, [2, 2]))
    dhp = ContinualModel(MLP(6, (5,)), SingleHead(5, 4, DHPSoftmax))
    assert not linear.uses_targets and dhp.uses_targets
    single = ContinualModel(MLP(6, (5,)), SingleHead(5, 4))
    assert not single.uses_targets
    assert ContinualModel(MLP(6, (5,)), MultiHead(5, [2, 2], DHPSoftmax)).uses_targets
    x, y = torch.randn(4, 6), torch.tensor([2, 3, 3, 2])
    expected = linear(x)[:, 2:4]
    assert linear(x, slice(2, 4)).shape == (4, 2)
    torch.testing.assert_close(linear(x, slice(2, 4), y), expected, rtol=0, atol=0)
    torch.testing.assert_close(linear(x, units=slice(2, 4), targets=y), expected, rtol=0, atol=0)
    torch.testing.assert_close(single(x, targets=y), single(x), rtol=0, atol=0)
    dhp.train()
    before = dhp.head.layer.hebb.clone()
    z = dhp(x, units=slice(2, 4), targets=y)
    assert z.shape == (4, 2)
    assert torch.count_nonzero(dhp.head.layer.hebb[:2] - before[:2]) == 0  # classes 0, 1 absent
    assert torch.count_nonzero(dhp.head.layer.hebb[2:] - before[2:]) > 0
    with pytest.raises(ValueError, match="targets must lie in"):
        dhp(x, units=slice(2, 4), targets=torch.tensor([2, 3, 9, 2]))


@pytest.mark.parametrize("units", [slice(3, 3), slice(0, 7), slice(-1, 2), slice(0, 6, 2)])
def test_bad_unit_ranges_are_rejected(features: torch.Tensor, units: slice) -> None:
    with pytest.raises(ValueError, match="not a contiguous range inside 0..6"):
        SingleHead(7, 6)(features, units=units)
    with pytest.raises(ValueError, match="not a contiguous range"):
        MultiHead(7, [3, 3])(features, units=units)


def test_mlp_shapes_and_fc_modules() -> None:
    mlp = MLP(784, (256, 128))
    x = torch.randn(4, 1, 28, 28)
    assert mlp(x).shape == (4, 128)
    assert mlp.out_features == 128
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 128)]
    assert mlp.fc_modules() == [linears[-1]]
    with pytest.raises(ValueError, match="at least one hidden width"):
        MLP(10, ())
    with pytest.raises(ValueError, match="must be positive"):
        MLP(10, (5, 0))


def test_mlp_dropout_layers() -> None:
    mlp = MLP(16, (8, 8), dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in mlp.modules()) == 2
    assert not any(isinstance(m, nn.Dropout) for m in MLP(16, (8, 8)).modules())


def test_small_cnn_shapes() -> None:
    cnn = SmallCNN(1, 28, hidden=64)
    assert cnn(torch.randn(3, 1, 28, 28)).shape == (3, 64)
    assert cnn.fc_modules() == [cnn.fc]
    cnn3 = SmallCNN(3, 32, channels=(8, 16), hidden=32)
    assert cnn3(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    # the FC part holds the last linear layer, the conv part none
    assert not any(isinstance(m, nn.Linear) for m in cnn.conv.modules())


def test_resnet32_shape_and_depth() -> None:
    net = ResNet32(3)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 31  # stem + 3 stages x 5 blocks x 2 (+ the head makes 32 layers)
    assert net.fc_modules() == []


def test_resnet20_is_resnet32_with_three_blocks_per_stage() -> None:
    net = build_backbone("resnet20", (3, 32, 32), ())
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19  # stem + 3 stages x 3 blocks x 2 (+ the head makes 20 layers)


def test_build_backbone_by_name() -> None:
    assert isinstance(build_backbone("mlp", (1, 8, 8), (16,)), MLP)
    assert isinstance(build_backbone("cnn", (1, 28, 28), (64,)), SmallCNN)
    assert isinstance(build_backbone("resnet32", (3, 32, 32), ()), ResNet32)
    with pytest.raises(ValueError, match="unknown model.arch 'vgg'; valid: mlp, cnn, resnet32"):
        build_backbone("vgg", (1, 8, 8), (16,))
    with pytest.raises(ValueError, match="square images"):
        build_backbone("cnn", (1, 8, 6), (16,))


@pytest.mark.parametrize("setting, head, cls", [("task", "auto", MultiHead),
                                                ("class", "auto", SingleHead),
                                                ("domain", "auto", SingleHead),
                                                ("task", "single", SingleHead),
                                                ("class", "multi", MultiHead)])
def test_build_model_heads(split_digits: Scenario, setting: str, head: str, cls: type) -> None:
    lay = Layout.for_scenario(split_digits, setting)
    model = build_model(split_digits, lay, ModelConfig(hidden=(16,), head=head))
    assert isinstance(model, ContinualModel) and isinstance(model.head, cls)
    assert model.num_units == lay.num_units
    x = split_digits.tasks[0].test_x[:3]
    assert model(x).shape == (3, lay.num_units)
    assert model(x, units=lay.task_units(1)).shape == (3, lay.sizes[1])
    assert model.features(x).shape == (3, 16)


def test_model_forward_is_head_of_backbone(split_digits: Scenario) -> None:
    lay = Layout.for_scenario(split_digits, "task")
    model = build_model(split_digits, lay, ModelConfig(hidden=(16, 8)))
    x = split_digits.tasks[0].test_x[:4]
    torch.testing.assert_close(model(x, units=slice(2, 6)),
                               model.head(model.backbone(x))[:, 2:6], rtol=0, atol=1e-6)


def test_multi_head_in_domain_il_is_an_error(split_digits: Scenario) -> None:
    lay = Layout.for_scenario(split_digits, "domain")
    with pytest.raises(ValueError) as err:
        build_model(split_digits, lay, ModelConfig(head="multi"))
    msg = str(err.value)
    assert "model.head=multi" in msg and "domain-incremental" in msg
    assert "model.head=single or auto" in msg


def test_unknown_head_lists_valid_heads(split_digits: Scenario) -> None:
    lay = Layout.for_scenario(split_digits, "task")
    with pytest.raises(ValueError, match="unknown model.head 'shared'; valid: auto, multi, single"):
        build_model(split_digits, lay, ModelConfig(head="shared"))


def test_same_seed_same_initialisation(split_digits: Scenario) -> None:
    lay = Layout.for_scenario(split_digits, "task")
    torch.manual_seed(3)
    a = build_model(split_digits, lay, ModelConfig(hidden=(16,)))
    torch.manual_seed(3)
    b = build_model(split_digits, lay, ModelConfig(hidden=(16,)))
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
