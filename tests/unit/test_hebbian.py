"""Hebbian rules (lifelong.hebbian): closed forms and the behaviour each rule is known for."""

from __future__ import annotations

import math

import pytest
import torch

from lifelong.hebbian import AssociativeMemory, CompetitiveLayer, NeuralGas, Oja, rules


def test_hebb_is_the_batch_sum_of_outer_products() -> None:
    g = torch.Generator().manual_seed(0)
    w, x, y = torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g), torch.randn(
        4, 3, generator=g)
    expected = w.clone()
    for b in range(4):
        expected += 0.1 * torch.outer(y[b], x[b])
    assert torch.allclose(rules.hebb(w, x, y, 0.1), expected, atol=1e-6)


def test_pattern_average_matches_its_definition_and_batches_add_up() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.randint(0, 2, (6, 8), generator=g).float() * 2 - 1
    w = rules.pattern_average(p, zero_diagonal=False)
    assert torch.allclose(w, sum(torch.outer(v, v) for v in p) / 6)
    mem = AssociativeMemory(8)
    mem.store(p[:2])
    mem.store(p[2:])
    assert torch.allclose(mem.weight, rules.pattern_average(p), atol=1e-6)
    assert int(mem.count) == 6


def test_associative_memory_recalls_patterns_with_ten_percent_of_bits_flipped() -> None:
    n, p = 200, 10  # p = 0.05 N, well below capacity (0.138 N)
    g = torch.Generator().manual_seed(0)
    patterns = torch.randint(0, 2, (p, n), generator=g).float() * 2 - 1
    mem = AssociativeMemory(n)
    mem.store(patterns)
    flip = torch.stack([torch.randperm(n, generator=g)[: n // 10] for _ in range(p)])
    cues = patterns.clone()
    cues.scatter_(1, flip, -patterns.gather(1, flip))
    assert int((cues != patterns).sum()) == p * n // 10
    assert torch.equal(mem.recall(cues), patterns)
    state = mem.state_dict()
    other = AssociativeMemory(n)
    other.load_state_dict(state)
    assert torch.equal(other.recall(cues), patterns)


def test_oja_converges_to_the_first_principal_component_with_unit_norm() -> None:
    g = torch.Generator().manual_seed(0)
    d = 10
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    cov = q @ torch.diag(torch.tensor([5.0, 2.0, 1.5, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2])) @ q.T
    x = torch.randn(20000, d, generator=g) @ torch.linalg.cholesky(cov).T
    unit = Oja(d, lr=0.01, generator=g)
    for i in range(0, x.shape[0], 10):
        unit.step(x[i:i + 10])
    _, vecs = torch.linalg.eigh(cov)
    pc = vecs[:, -1]
    cos = abs(float(unit.weight @ pc)) / float(unit.weight.norm())
    assert cos >= 0.99, cos
    assert abs(float(unit.weight.norm()) - 1.0) < 0.05


def _mixture(centres: torch.Tensor, n: int, std: float, g: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(centres.shape[0]).repeat_interleave(n)
    return centres[y] + std * torch.randn(len(y), centres.shape[1], generator=g), y


@pytest.mark.parametrize("lr", [None, 0.05])
def test_competitive_learning_recovers_the_centres_of_a_gaussian_mixture(lr: float | None
                                                                          ) -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[3.0, 3.0], [-3.0, 3.0], [3.0, -3.0], [-3.0, -3.0], [0.0, 0.0]])
    x, _ = _mixture(centres, 200, 0.2, g)
    layer = CompetitiveLayer.from_samples(x, 5, generator=g)
    for _ in range(5):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 20):
            layer.step(x[order[i:i + 20]], lr=lr)
    err = torch.cdist(centres, layer.prototypes).min(1).values
    assert float(err.max()) < 0.1, err  # clusters 3 apart, std 0.2
    assert int(layer.wins.sum()) == 5 * x.shape[0]


def test_labelled_competitive_learning_matches_nearest_class_mean() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 6, generator=g)  # overlapping classes: accuracy well below 1
    x, y = _mixture(centres, 300, 0.8, g)
    xt, yt = _mixture(centres, 300, 0.8, g)
    layer = CompetitiveLayer(x[torch.arange(4) * 300], node_labels=torch.arange(4))
    for i in range(0, x.shape[0], 64):
        layer.step(x[i:i + 64], labels=y[i:i + 64])
    means = torch.stack([x[y == c].mean(0) for c in range(4)])
    ncm = torch.cdist(xt, means).argmin(1)
    pred = layer.predict(xt)
    assert torch.allclose(layer.prototypes, means, atol=1e-5)
    acc, ncm_acc = float((pred == yt).float().mean()), float((ncm == yt).float().mean())
    assert 0.4 < ncm_acc < 0.99
    assert acc == ncm_acc


def test_competitive_learning_rejects_labels_without_node_labels() -> None:
    layer = CompetitiveLayer(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="node_labels"):
        layer.step(torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expects inputs \[B, 3\]"):
        layer.step(torch.zeros(4, 5))


def test_neural_gas_weights_are_exp_of_minus_rank_over_lambda() -> None:
    d = torch.tensor([[0.3, 0.1, math.inf, 0.2]])
    h = rules.neural_gas_weights(d, 2.0)
    assert torch.allclose(h, torch.tensor([[math.exp(-1.0), 1.0, 0.0, math.exp(-0.5)]]))


def test_neural_gas_single_sample_step_is_the_online_rule() -> None:
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(5, 3, generator=g), torch.randn(1, 3, generator=g)
    ranks = torch.argsort(torch.argsort(((w - x) ** 2).sum(1))).float()
    expected = w + 0.3 * torch.exp(-ranks / 1.5)[:, None] * (x - w)
    assert torch.allclose(rules.neural_gas(w, x, 0.3, 1.5), expected, atol=1e-6)


def test_competitive_hebbian_connects_winners_ages_and_prunes() -> None:
    age = torch.full((4, 4), math.inf)
    age[0, 2] = age[2, 0] = 5.0
    age[1, 3] = age[3, 1] = 9.0
    new = rules.competitive_hebbian(age, torch.tensor([0, 0]), torch.tensor([1, 1]), max_age=8)
    assert float(new[0, 1]) == 0.0 and float(new[1, 0]) == 0.0  # connected
    assert float(new[0, 2]) == 7.0  # the winner's other edge aged twice
    assert math.isinf(float(new[1, 3]))  # 9 + 0 wins > 8: pruned
    assert math.isinf(float(new[0, 3])) and math.isinf(float(new[0, 0]))


def test_neural_gas_learns_a_ring_as_one_cycle_and_lowers_the_quantisation_error() -> None:
    g = torch.Generator().manual_seed(0)
    theta = 2 * math.pi * torch.rand(2000, generator=g)
    r = 1.0 + 0.02 * torch.randn(2000, generator=g)
    x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)
    k = 20
    gas = NeuralGas(k, 2)
    gas.init_from(x, generator=g)
    before = gas.quantisation_error(x)
    errors = gas.fit(x, epochs=6, batch_size=50, generator=g)
    assert errors[-1] < 0.5 * before  # 20 evenly spaced nodes: s^2/12 = 0.0082
    assert all(b <= a * 1.05 for a, b in zip(errors, errors[1:])), errors
    # one cycle through angular neighbours: sort nodes by angle, edges are consecutive pairs
    angle = torch.atan2(gas.nodes[:, 1], gas.nodes[:, 0])
    pos = torch.empty(k, dtype=torch.long)
    pos[torch.argsort(angle)] = torch.arange(k)
    edges = {tuple(sorted((int(pos[i]), int(pos[j])))) for i, j in gas.edges().tolist()}
    ring = {tuple(sorted((i, (i + 1) % k))) for i in range(k)}
    assert edges == ring
    state = gas.state_dict()
    assert set(state) == {"nodes", "age"}
    other = NeuralGas(k, 2)
    other.load_state_dict(state)
    assert torch.equal(other.edges(), gas.edges())


def test_neural_gas_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 2 nodes"):
        NeuralGas(1, 3)
    gas = NeuralGas(10, 3)
    with pytest.raises(ValueError, match="at least 10 samples"):
        gas.init_from(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="lambda > 0"):
        rules.neural_gas(torch.zeros(2, 3), torch.zeros(1, 3), 0.1, 0.0)
