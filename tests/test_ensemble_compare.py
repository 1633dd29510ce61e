"""Paired bootstrap comparisons on SYNTHETIC out-of-fold frames."""
import numpy as np
import pandas as pd

from ensemble.compare import compare_to_best, resampled_totals
from esci.artifacts import LABELS, PROB_COLUMNS


def _oof(quality, seed, n_queries=300):
    rng = np.random.default_rng(seed)
    qid = np.repeat(np.arange(n_queries), 4).astype(str)
    label = np.random.default_rng(0).choice(list(LABELS), len(qid), p=[.6, .25, .05, .1])
    onehot = (np.array(LABELS)[None] == label[:, None]).astype(float)
    probs = quality * onehot + (1 - quality) * rng.dirichlet(np.ones(4), len(qid))
    df = pd.DataFrame(probs, columns=PROB_COLUMNS)
    df["score"] = probs @ np.array([1, .1, .01, 0])
    return df.assign(esci_label=label, query_id=qid, fold=np.arange(len(qid)) // 4 % 3)


def test_clearly_better_model_is_better_beyond_ci_and_a_copy_is_within():
    weak = _oof(0.2, seed=1)
    table = compare_to_best({"strong": _oof(0.8, seed=2), "copy": weak.copy()}, {"weak": weak},
                            n_boot=200, seed=0).set_index(["model", "metric"])
    for metric in ("task1_ndcg", "task2_micro_f1", "task3_micro_f1"):
        assert table.loc[("strong", metric), "verdict"] == "better beyond CI"
        assert table.loc[("copy", metric), "diff"] == 0.0
        assert table.loc[("copy", metric), "verdict"] == "within CI"


def test_resampled_totals_match_sums_of_drawn_queries():
    cols = np.arange(12, dtype=float).reshape(6, 2)
    totals = resampled_totals(cols, n_boot=7, seed=3, chunk=3)
    rng = np.random.default_rng(3)
    expected = []
    for b in (3, 3, 1):
        picks = rng.integers(0, 6, size=(b, 6))
        expected += [cols[p].sum(axis=0) for p in picks]
    np.testing.assert_allclose(totals, np.array(expected))
