"""Competition metrics against scikit-learn on random data with ties."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, ndcg_score

from esci.metrics import ndcg, ndcg_per_query, task2_scores, task3_scores, tune_threshold

GAIN_VALUES = np.array([1.0, 0.1, 0.01, 0.0])


def test_ndcg_matches_sklearn_per_query_with_ties():
    rng = np.random.default_rng(0)
    qids, gains, scores, expected = [], [], [], []
    for q in range(300):
        n = int(rng.integers(2, 12))
        g = rng.choice(GAIN_VALUES, n)
        s = rng.integers(0, 4, n).astype(float)  # few distinct values: many ties
        if g.sum() == 0:
            continue
        qids += [q] * n
        gains += list(g)
        scores += list(s)
        expected.append(ndcg_score(g[None], s[None]))
    order = rng.permutation(len(qids))  # rows of one query need not be adjacent
    got = ndcg_per_query(np.array(qids)[order], np.array(gains)[order], np.array(scores)[order])
    assert np.allclose(got.sort_values("query_id")["ndcg"].to_numpy(), expected, atol=1e-12)


def test_single_product_and_all_irrelevant_queries_score_one():
    per_q = ndcg_per_query(["a", "b", "b", "c", "c"], [0.0, 0.0, 0.0, 1.0, 0.1], [0.3, 0.1, 0.9, 0.2, 0.8])
    by_q = per_q.set_index("query_id")
    assert by_q.loc["a", "ndcg"] == 1.0 and by_q.loc["b", "ndcg"] == 1.0
    assert by_q.loc["c", "ndcg"] < 1.0
    assert by_q["informative"].tolist() == [False, False, True]
    assert ndcg(["a", "b", "b", "c", "c"], [0, 0, 0, 1, .1], [.3, .1, .9, .2, .8],
                informative_only=True) == pytest.approx(by_q.loc["c", "ndcg"])


def test_perfect_ranking_scores_one_and_reversed_less():
    g = np.array([1.0, 0.1, 0.01, 0.0])
    assert ndcg([1] * 4, g, [4, 3, 2, 1]) == pytest.approx(1.0)
    assert ndcg([1] * 4, g, [1, 2, 3, 4]) < 0.7


def test_task2_and_task3_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.choice(list("ESCI"), 500, p=[.6, .2, .05, .15])
    p = np.where(rng.random(500) < .6, y, rng.choice(list("ESCI"), 500))
    s = task2_scores(y, p)
    assert s["micro_f1"] == pytest.approx(f1_score(y, p, average="micro"))
    assert s["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", labels=list("ESCI")))
    assert s["confusion"].sum() == 500
    t3 = task3_scores(y == "S", p == "S")
    assert t3["micro_f1"] == pytest.approx(f1_score(y == "S", p == "S", average="micro"))
    assert t3["substitute_f1"] == pytest.approx(f1_score(y == "S", p == "S"))


def test_tuned_threshold_is_as_good_as_any_cut():
    rng = np.random.default_rng(2)
    truth = rng.random(300) < 0.3
    prob = np.clip(truth * 0.3 + rng.random(300) * 0.7, 0, 1)
    cut = tune_threshold(truth, prob)
    best = max(((prob >= c) == truth).mean() for c in np.r_[prob, 2.0])
    assert ((prob >= cut) == truth).mean() == pytest.approx(best)
