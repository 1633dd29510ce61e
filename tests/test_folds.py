import numpy as np
import pandas as pd

from data.esci_io import load_esci
from data.folds import make_folds, normalize_query
from esci.artifacts import TEST_FOLD


def test_folds_are_grouped_by_normalised_query_and_deterministic(sample_dir):
    ex = load_esci(sample_dir).examples
    folds = make_folds(ex, n_folds=5, seed=7)
    train = folds[folds["fold"] != TEST_FOLD]
    assert train.groupby("query_norm")["fold"].nunique().max() == 1
    assert sorted(train["fold"].unique()) == [0, 1, 2, 3, 4]
    again = make_folds(ex.sample(frac=1.0, random_state=3), n_folds=5, seed=7)  # file order shuffled
    merged = folds.merge(again, on="example_id")
    assert (merged["fold_x"] == merged["fold_y"]).all()
    other_seed = make_folds(ex, n_folds=5, seed=8).set_index("example_id").loc[folds["example_id"]]
    assert (other_seed["fold"].to_numpy() != folds["fold"].to_numpy()).any()


def test_official_test_rows_are_never_in_a_training_fold(sample_dir):
    ex = load_esci(sample_dir).examples
    folds = make_folds(ex).merge(ex[["example_id", "split"]], on="example_id")
    assert (folds.loc[folds["split"] == "test", "fold"] == TEST_FOLD).all()
    assert (folds.loc[folds["split"] != "test", "fold"] >= 0).all()


def test_folds_are_stratified_by_label(sample_dir):
    ex = load_esci(sample_dir).examples
    folds = make_folds(ex).merge(ex[["example_id", "esci_label"]], on="example_id")
    share = pd.crosstab(folds["fold"], folds["esci_label"], normalize="index").drop(index=TEST_FOLD)
    assert (share.max() - share.min()).max() < 0.03


def test_normalisation_merges_case_width_and_spaces():
    assert normalize_query("  Apple   WATCH ") == normalize_query("apple watch")
    assert normalize_query("ＡＢＣ") == "abc"
    assert np.all([normalize_query(q) != "" for q in ["x"]])
