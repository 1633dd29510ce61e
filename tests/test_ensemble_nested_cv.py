"""The stacker's nested CV never lets a held-out row's label reach its own prediction.

Data here is SYNTHETIC (numpy, seeded): it tests a property of the scheme, not model quality.
"""
import numpy as np
import pytest

from ensemble.config import EnsembleConfig
from ensemble.stacker import nested_cv
from esci.artifacts import GAINS, LABELS
from esci.metrics import ndcg, task3_scores

CFG = EnsembleConfig(n_estimators=40, num_leaves=7, min_child_samples=10, n_jobs=1)
N_FOLDS = 4


def _synthetic(n_queries=240, seed=0):
    """Rows grouped by query, a weakly informative feature block, folds by query."""
    rng = np.random.default_rng(seed)
    query = np.repeat(np.arange(n_queries), rng.integers(3, 8, n_queries))
    label = rng.choice(4, len(query), p=[0.55, 0.25, 0.05, 0.15])
    signal = np.eye(4)[label] + rng.normal(0, 1.2, (len(query), 4))
    x = np.hstack([signal, rng.normal(size=(len(query), 2))]).astype(np.float32)
    fold = rng.permutation(n_queries)[query] % N_FOLDS
    return x, label, fold, query, rng


def _score(task, pred, label, query):
    if task == "task1":
        gains = np.array([GAINS[l] for l in LABELS])[label]
        return ndcg(query, gains, pred, informative_only=True)
    if task == "task2":
        return float((pred.argmax(axis=1) == label).mean())
    truth = label == LABELS.index("S")
    return task3_scores(truth, pred >= 0.5)["micro_f1"]


@pytest.mark.parametrize("task", ["task1", "task2", "task3"])
def test_label_planted_on_training_rows_and_noise_on_held_out_does_not_raise_cv_score(task):
    x, label, fold, query, rng = _synthetic()
    names = [f"f{i}" for i in range(x.shape[1] + 1)]
    noise = rng.normal(size=len(label)).astype(np.float32)
    planted_value = label.astype(np.float32)

    def with_column(col):
        return np.hstack([x, col[:, None]])

    def as_fold_k_sees_it(k):
        # Label on the rows fold k may train on, pure noise on fold k itself.
        return with_column(np.where(fold == k, noise, planted_value).astype(np.float32))

    honest = nested_cv(task, with_column(noise), label, fold, query, CFG, names)
    planted = nested_cv(task, as_fold_k_sees_it, label, fold, query, CFG, names)
    # Control: the same column where it also holds on the predicted rows, as it would if the
    # scheme leaked (in-sample predictions); it must lift the score a lot, or this test is blind.
    leaky = nested_cv(task, with_column(planted_value), label, fold, query, CFG, names)

    s_honest = _score(task, honest.oof, label, query)
    s_planted = _score(task, planted.oof, label, query)
    s_leaky = _score(task, leaky.oof, label, query)
    assert s_leaky > s_honest + 0.1, (s_honest, s_leaky)
    assert s_planted <= s_honest + 0.01, (s_honest, s_planted)
    assert not np.isnan(planted.oof).any()


def test_each_fold_is_predicted_by_a_model_that_never_saw_its_labels():
    """Flip every label of fold 0: fold 0's predictions must not move, the others' must."""
    x, label, fold, query, _ = _synthetic(seed=1)
    names = [f"f{i}" for i in range(x.shape[1])]
    base = nested_cv("task2", x, label, fold, query, CFG, names)
    flipped = label.copy()
    flipped[fold == 0] = (label[fold == 0] + 1) % 4
    moved = nested_cv("task2", x, flipped, fold, query, CFG, names)
    assert np.array_equal(base.oof[fold == 0], moved.oof[fold == 0])
    assert not np.allclose(base.oof[fold != 0], moved.oof[fold != 0])


def test_same_seed_same_predictions_and_test_rows_are_fold_averaged():
    x, label, fold, query, rng = _synthetic(seed=2)
    names = [f"f{i}" for i in range(x.shape[1])]
    x_test = rng.normal(size=(50, x.shape[1])).astype(np.float32)
    a = nested_cv("task2", x, label, fold, query, CFG, names, x_test)
    b = nested_cv("task2", x, label, fold, query, CFG, names, x_test)
    assert np.array_equal(a.oof, b.oof) and np.array_equal(a.test, b.test)
    np.testing.assert_allclose(a.test.sum(axis=1), 1.0, atol=1e-9)
    assert set(a.importance["fold"]) == set(range(N_FOLDS))
