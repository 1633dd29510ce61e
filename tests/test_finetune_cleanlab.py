"""Confident learning: flagging rules, and the planted-noise check on the real sample."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from baseline.lexical_features import build_lexical_features
from data.esci_io import load_esci
from data.folds import make_folds
from esci.artifacts import TEST_FOLD
from finetune.batches import label_indices
from finetune.confident import flag_label_issues, label_issues
from finetune.planted_noise import detection_scores, lgbm_in_sample_probs, lgbm_oof_probs, plant_noise


def test_fraction_flags_the_lowest_label_quality_rows():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    labels = rng.integers(0, 4, size=200)
    flagged, quality = flag_label_issues(labels, probs, fraction=0.1)
    assert len(flagged) == 20
    assert quality[flagged].max() <= np.sort(quality)[19] + 1e-12
    with pytest.raises(ValueError, match="fraction"):
        flag_label_issues(labels, probs, fraction=1.5)


def test_label_issues_reports_given_and_suggested_labels():
    oof = pd.DataFrame({"example_id": ["a", "b", "c", "d", "e", "f", "g", "h"],
                        "esci_label": ["E", "E", "S", "S", "C", "C", "I", "E"]})
    good = np.eye(4)[label_indices(oof["esci_label"])] * 0.9 + 0.025
    good[7] = [0.025, 0.025, 0.025, 0.925]  # row h: labelled E, the model is sure it is I
    oof[["p_E", "p_S", "p_C", "p_I"]] = good
    issues = label_issues(oof, fraction=0.125)
    assert issues.to_dict("records")[0] | {"label_quality": 0} == {
        "example_id": "h", "given_label": "E", "suggested_label": "I", "label_quality": 0}


def test_plant_noise_flips_exactly_the_rate_to_other_labels():
    labels = np.repeat(np.arange(4), 250)
    noisy, flipped = plant_noise(labels, 0.05, seed=3)
    assert flipped.sum() == 50 and np.all(noisy[flipped] != labels[flipped])
    assert np.array_equal(noisy[~flipped], labels[~flipped])
    assert np.array_equal(plant_noise(labels, 0.05, seed=3)[0], noisy)


def test_cleanlab_finds_planted_noise_only_with_out_of_fold_probabilities(sample_dir):
    data = load_esci(sample_dir)
    folds = make_folds(data.examples, 3, 42)
    features = build_lexical_features(data.examples, data.products)
    df = data.examples.merge(folds, on=["example_id", "query_id"]).merge(features, on="example_id")
    df = df[df["fold"] != TEST_FOLD].reset_index(drop=True)
    x = df[[c for c in features.columns if c != "example_id"]]
    rate = 0.05
    noisy, flipped = plant_noise(label_indices(df["esci_label"]), rate, seed=0)

    def recall(probs, fraction):
        flagged, _ = flag_label_issues(noisy, probs, fraction=fraction)
        return detection_scores(flagged, flipped)["recall"]
    oof = lgbm_oof_probs(x, noisy, df["fold"].to_numpy())
    # As many rows flagged as were flipped (precision == recall): a random flagger recalls 5%.
    assert recall(oof, rate) >= 5 * rate
    # cleanlab's own count: most flips found out of fold; a model that saw the rows it scores
    # has memorised their flipped labels, and cleanlab then finds almost none.
    assert recall(oof, 0.0) >= 0.5
    assert recall(lgbm_in_sample_probs(x, noisy), 0.0) < 0.1
