import numpy as np
import pandas as pd
import pytest

from esci.artifacts import LABELS, PROB_COLUMNS
from esci.leaderboard import METRICS, crossfit_task3, evaluate_oof


def _oof(n_queries=200, seed=0, quality=0.8):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_queries)
    qid = np.repeat(np.arange(n_queries), sizes).astype(str)
    label = rng.choice(list(LABELS), len(qid), p=[.6, .25, .05, .1])
    onehot = (np.array(LABELS)[None] == label[:, None]).astype(float)
    probs = quality * onehot + (1 - quality) * rng.dirichlet(np.ones(4), len(qid))
    df = pd.DataFrame(probs, columns=PROB_COLUMNS)
    df["score"] = probs @ np.array([1, .1, .01, 0])
    df["esci_label"] = label
    df["query_id"] = qid
    df["example_id"] = np.arange(len(qid)).astype(str)
    df["product_id"] = df["example_id"]
    df["product_locale"] = "us"
    df["fold"] = pd.Series(qid).astype(int).to_numpy() % 4
    return df


def test_row_has_every_metric_with_std_and_a_ci_around_the_point():
    row, folds = evaluate_oof(_oof(), n_boot=200, seed=0)
    for m in METRICS:
        assert row[f"{m}_lo"] <= row[m] <= row[f"{m}_hi"], m
        assert row[f"{m}_std"] >= 0
    assert set(folds["fold"]) == {0, 1, 2, 3}
    assert row["n_informative"] > 0


def test_perfect_model_scores_one_and_noise_scores_lower():
    good, _ = evaluate_oof(_oof(quality=1.0), n_boot=20)
    bad, _ = evaluate_oof(_oof(quality=0.0), n_boot=20)
    assert good["task1_ndcg"] == pytest.approx(1.0)
    assert good["task2_micro_f1"] == pytest.approx(1.0)
    assert bad["task2_micro_f1"] < 0.6 and bad["task1_ndcg_informative"] < good["task1_ndcg_informative"]


def test_bootstrap_is_deterministic_by_seed_and_narrows_with_more_queries():
    a, _ = evaluate_oof(_oof(quality=0.3), n_boot=100, seed=3)
    b, _ = evaluate_oof(_oof(quality=0.3), n_boot=100, seed=3)
    assert a == b
    big, _ = evaluate_oof(_oof(n_queries=2000, quality=0.3), n_boot=100, seed=3)
    width = lambda r: r["task2_micro_f1_hi"] - r["task2_micro_f1_lo"]  # noqa: E731
    assert width(big) < width(a)


def test_task3_threshold_of_a_fold_is_tuned_on_the_other_folds_only():
    # Fold 0's labels say "cut high", every other fold says "cut low". A threshold tuned on
    # fold 0 itself would classify fold 0 perfectly; the cross-fitted one must not.
    df = pd.DataFrame({"fold": [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4,
                       "p_S": [.5, .5, .9, .9] + [.5, .5, .1, .1] * 3,
                       "esci_label": ["E", "E", "S", "S"] + ["S", "S", "E", "E"] * 3})
    decision = crossfit_task3(df)
    assert decision[:4].tolist() == [True, True, True, True]  # self-tuned would be F, F, T, T
    assert decision[4:].tolist() == [True, True, False, False] * 3
