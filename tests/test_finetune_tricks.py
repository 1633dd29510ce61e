"""Each fine-tuning trick's defining property, on tiny tensors and a tiny model."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from finetune.losses import TaskLoss, class_logits, poly1_cross_entropy
from finetune.tricks.ema import make_ema
from finetune.tricks.fgm import fgm_perturbation
from finetune.tricks.mixup import Mix, sample_mix
from finetune.tricks.rdrop import RDropLoss, consistency, symmetric_kl


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 3)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, ids):
        return self.out(self.emb(ids).mean(1))


# --- EMA -------------------------------------------------------------------------------------

def _shift(model: nn.Module, by: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_with_decay_zero_equals_the_model(warmup):
    model = TinyNet()
    ema = make_ema(model, decay=0.0, warmup=warmup)
    for step in range(3):
        _shift(model, 0.5 + step)
        ema.update_parameters(model)
        for p_ema, p in zip(ema.module.parameters(), model.parameters()):
            assert torch.equal(p_ema, p)


def test_ema_follows_the_exponential_average():
    model = TinyNet()
    ema = make_ema(model, decay=0.9, warmup=False)
    w0 = model.out.weight.detach().clone()
    ema.update_parameters(model)  # first update copies
    _shift(model, 1.0)
    ema.update_parameters(model)
    _shift(model, 1.0)
    ema.update_parameters(model)
    # 0.9 * (0.9 * w0 + 0.1 * (w0 + 1)) + 0.1 * (w0 + 2) = w0 + 0.29
    assert torch.allclose(ema.module.out.weight, w0 + 0.29, atol=1e-6)
    assert not torch.allclose(ema.module.out.weight, model.out.weight)


def test_ema_warmup_ramps_the_decay():
    model = TinyNet()
    ema = make_ema(model, decay=0.999, warmup=True)
    w0 = model.out.weight.detach().clone()
    ema.update_parameters(model)  # n_averaged 0 -> copy
    _shift(model, 1.0)
    ema.update_parameters(model)  # n_averaged 1 -> decay min(0.999, 2/11)
    assert torch.allclose(ema.module.out.weight, w0 + (1 - 2 / 11), atol=1e-6)


# --- FGM -------------------------------------------------------------------------------------

def _with_embedding_grad(model: nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    model(ids).sum().backward()
    return ids


def test_fgm_perturbs_by_epsilon_and_restores_bit_exact():
    model = TinyNet()
    ids = _with_embedding_grad(model)
    before = model.emb.weight.detach().clone()
    with fgm_perturbation(model, epsilon=0.5) as delta:
        moved = model.emb.weight.detach() - before
        assert torch.linalg.vector_norm(moved).item() == pytest.approx(0.5, rel=1e-5)
        assert torch.equal(moved, model.emb.weight.detach() - before)
        assert delta is not None
        model(ids).sum().backward()  # the adversarial pass adds its gradient
    assert torch.equal(model.emb.weight, before)


def test_fgm_restores_bit_exact_when_the_block_raises():
    model = TinyNet()
    _with_embedding_grad(model)
    before = model.emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with fgm_perturbation(model, epsilon=3.0):
            assert not torch.equal(model.emb.weight, before)
            raise RuntimeError("boom")
    assert torch.equal(model.emb.weight, before)


def test_fgm_without_a_gradient_changes_nothing():
    model = TinyNet()
    before = model.emb.weight.detach().clone()
    with fgm_perturbation(model, epsilon=1.0) as delta:
        assert delta is None and torch.equal(model.emb.weight, before)


# --- R-Drop ----------------------------------------------------------------------------------

def test_rdrop_is_zero_for_identical_logits():
    logits = {"task2": torch.randn(5, 4), "task3": torch.randn(5, 1)}
    assert consistency(logits, {k: v.clone() for k, v in logits.items()}).item() == 0.0
    targets = {"task2": F.one_hot(torch.arange(5) % 4, 4).float(),
               "task3": torch.tensor([[1.0, 0.0]] * 5)}
    base = TaskLoss({})
    assert RDropLoss(base, alpha=3.0)(logits, logits, targets).item() == pytest.approx(
        base(logits, targets).item())


def test_rdrop_single_logit_uses_the_bernoulli_kl():
    a, b = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.0], [0.5]])
    # The public code's bug: a softmax over one logit is [1.0], its KL always 0.
    assert F.kl_div(F.log_softmax(b, -1), F.softmax(a, -1), reduction="batchmean").item() == 0.0

    def bern_kl(p, q):
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    pa, pb = torch.sigmoid(a).flatten().tolist(), torch.sigmoid(b).flatten().tolist()
    expected = sum(0.5 * (bern_kl(x, y) + bern_kl(y, x)) for x, y in zip(pa, pb)) / 2
    assert symmetric_kl(a, b).item() == pytest.approx(expected, rel=1e-5)
    assert symmetric_kl(a, b).item() > 0
    assert symmetric_kl(a, b).item() == pytest.approx(symmetric_kl(b, a).item())


def test_rdrop_adds_alpha_times_the_kl():
    a, b = {"task2": torch.randn(3, 4)}, {"task2": torch.randn(3, 4)}
    targets = {"task2": F.one_hot(torch.tensor([0, 1, 2]), 4).float()}
    base = TaskLoss({})
    got = RDropLoss(base, alpha=2.0)(a, b, targets)
    want = 0.5 * (base(a, targets) + base(b, targets)) + 2.0 * symmetric_kl(a["task2"], b["task2"])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


# --- mixup -----------------------------------------------------------------------------------

def test_mixup_matches_hand_computed_values():
    mix = Mix(lam=0.25, perm=torch.tensor([2, 0, 1]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert torch.equal(mix.apply(x), torch.tensor([[4.0, 5.0], [1.5, 2.5], [3.5, 4.5]]))
    y = {"task3": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])}
    assert torch.equal(mix.targets(y)["task3"], torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75]]))
    w = torch.tensor([1.0, 2.0, 4.0])
    assert torch.equal(mix.apply(w), torch.tensor([3.25, 1.25, 2.5]))


def test_mixup_lambda_is_beta_distributed():
    torch.manual_seed(0)
    alpha = 0.4
    lams = torch.tensor([sample_mix(4, alpha).lam for _ in range(4000)])
    assert lams.min() >= 0 and lams.max() <= 1
    assert lams.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lams.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), abs=0.01)
    perm = sample_mix(6, alpha).perm
    assert sorted(perm.tolist()) == list(range(6))


# --- losses ----------------------------------------------------------------------------------

def test_poly1_with_epsilon_zero_is_cross_entropy_and_adds_one_minus_pt():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    onehot = F.one_hot(labels, 4).float()
    assert poly1_cross_entropy(logits, onehot).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    pt = F.softmax(logits, -1)[torch.arange(6), labels]
    want = (F.cross_entropy(logits, labels, reduction="none") + 2.0 * (1 - pt)).mean()
    assert poly1_cross_entropy(logits, onehot, epsilon=2.0).item() == pytest.approx(want.item(), rel=1e-6)


def test_label_smoothing_matches_torch():
    torch.manual_seed(1)
    logits, labels = torch.randn(5, 4), torch.tensor([3, 2, 1, 0, 0])
    loss = TaskLoss({}, epsilon=0.0, label_smoothing=0.1)({"task2": logits}, {"task2": F.one_hot(labels, 4).float()})
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-6)


def test_sample_weights_weight_the_rows():
    logits, target = torch.randn(2, 4), F.one_hot(torch.tensor([1, 2]), 4).float()
    first = poly1_cross_entropy(logits[:1], target[:1])
    assert poly1_cross_entropy(logits, target, weight=torch.tensor([1.0, 0.0])).item() == pytest.approx(first.item())


def test_single_logit_loss_is_binary_cross_entropy():
    z, y = torch.tensor([[0.3], [-2.0], [1.5]]), torch.tensor([1.0, 0.0, 0.1])
    assert torch.equal(class_logits(z)[:, 0], torch.zeros(3))
    got = poly1_cross_entropy(z, torch.stack([1 - y, y], 1))
    assert got.item() == pytest.approx(F.binary_cross_entropy_with_logits(z[:, 0], y).item(), rel=1e-6)
