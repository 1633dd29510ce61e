"""ListNet, the MTDNN / MMoE / PLE bodies, entity fusion and the QU metrics."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from query_understanding.bodies import MMoE, MTDNN, PLE, make_body
from query_understanding.evaluate import (decode_multilabel, gate_spans, multilabel_f1, ner_prf, tune_gate)
from query_understanding.losses import listnet_loss

TASKS = ["pt", "qc", "ner", "tw"]


def test_listnet_is_minimal_when_scores_order_entities_by_gain():
    gains = torch.tensor([[1.0, 0.1, 0.5, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    values = torch.tensor([3.0, 1.0, 2.0, 0.0])  # ordered like the gains
    aligned = listnet_loss(values[None], gains, mask)
    for perm in itertools.permutations(range(4)):
        permuted = listnet_loss(values[list(perm)][None], gains, mask)
        assert aligned <= permuted + 1e-6
        if list(perm) != [0, 1, 2, 3]:
            assert aligned < permuted - 1e-6
    # The global minimum is reached at scores = gains: the entropy of softmax(gains).
    p = torch.softmax(gains, 1)
    assert torch.isclose(listnet_loss(gains, gains, mask), -(p * p.log()).sum(), atol=1e-6)


def test_listnet_ignores_padding_and_single_entity_rows():
    gains = torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    scores = torch.tensor([[2.0, 1.0, 99.0], [5.0, -3.0, 7.0]], requires_grad=True)
    loss = listnet_loss(scores, gains, mask)
    expected = listnet_loss(scores[:1, :2], gains[:1, :2], mask[:1, :2])
    assert torch.isclose(loss, expected)
    loss.backward()
    assert scores.grad[0, 2] == 0 and (scores.grad[1] == 0).all()
    assert listnet_loss(scores[1:], gains[1:], mask[1:]) == 0


@pytest.mark.parametrize("cls", [MMoE, PLE])
def test_gated_bodies_shapes_and_gates_sum_to_one(cls):
    torch.manual_seed(0)
    body = cls(16, TASKS, n_experts=3, expert_dim=8, ple_layers=2, dropout=0.0)
    x = torch.randn(4, 5, 16)
    out, gates = body(x, return_gates=True)
    assert set(out) == set(TASKS)
    assert all(o.shape == (4, 5, 8) for o in out.values())
    assert gates
    for name, g in gates.items():
        assert g.shape[:2] == (4, 5)
        assert torch.allclose(g.sum(-1), torch.ones(4, 5), atol=1e-6), name
        assert (g >= 0).all()
    # Tasks get different mixtures: the gates are per task.
    names = [n for n in gates if not n.startswith("shared")]
    assert not torch.allclose(gates[names[0]], gates[names[1]])


def test_ple_gate_widths():
    body = PLE(16, TASKS, n_experts=2, expert_dim=8, ple_layers=2, dropout=0.0)
    _, gates = body(torch.randn(2, 3, 16), return_gates=True)
    assert gates["pt@0"].shape[-1] == 4  # own 2 + shared 2
    assert gates["shared@0"].shape[-1] == 2 * len(TASKS) + 2  # every expert
    assert "shared@1" not in gates  # the last layer has no shared output


def test_mtdnn_is_the_shared_state_and_unknown_body_fails():
    x = torch.randn(2, 3, 16)
    out = MTDNN(16, TASKS)(x)
    assert all(o is x for o in out.values())
    with pytest.raises(ValueError, match="body"):
        make_body("moe", 16, TASKS, n_experts=2, expert_dim=8, ple_layers=1, dropout=0.0)


def test_span_metrics_are_entity_level():
    true = [["B-BRAND", "I-BRAND", "O"], ["B-SIZE", "I-SIZE", "O"]]
    pred = [["B-BRAND", "O", "O"], ["B-SIZE", "I-SIZE", "O"]]  # half a brand span is a miss
    m = ner_prf(true, pred)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert ner_prf(true, pred, "SIZE")["f1"] == 1.0 and ner_prf(true, pred, "BRAND")["f1"] == 0.0


def test_gating_drops_low_score_spans_and_tuning_finds_the_gate():
    true = [["B-BRAND", "O"], ["O", "O"]]
    pred = [["B-BRAND", "O"], ["B-BRAND", "I-BRAND"]]  # the second is a false positive
    scores = [np.array([0.9, 0.1]), np.array([0.3, 0.4])]
    assert gate_spans(pred, scores, "BRAND", 0.5) == [["B-BRAND", "O"], ["O", "O"]]
    assert gate_spans(pred, scores, "BRAND", 0.0) == pred
    tau = tune_gate(true, pred, scores, "BRAND")
    assert 0.35 < tau <= 0.9
    assert ner_prf(true, gate_spans(pred, scores, "BRAND", tau), "BRAND")["precision"] == 1.0


def test_multilabel_decoding_keeps_the_top_cluster():
    probs = np.array([[0.2, 0.3, 0.1], [0.9, 0.6, 0.1]])
    assert decode_multilabel(probs).tolist() == [[False, True, False], [True, True, False]]
    m = multilabel_f1([[1], [0]], probs)
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1))
