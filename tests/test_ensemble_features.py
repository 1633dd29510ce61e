"""Stacking features on hand-made rows: per-query statistics, numbers/units, leak features."""
import numpy as np
import pandas as pd
import pytest

from ensemble.features import FeatureTable, add_query_stats, build_features, leak_features, \
    number_features
from ensemble.inputs import Split
from esci.artifacts import PROB_COLUMNS


def test_query_stats_rank_gaps_and_singleton_std():
    codes = np.array([0, 0, 0, 1])
    values = pd.DataFrame({"eg": [0.2, 0.9, 0.5, 0.7]})
    table = FeatureTable(4)
    add_query_stats(table, codes, values, "m")
    col = table.columns
    np.testing.assert_allclose(col["m__eg__qmax"], [0.9, 0.9, 0.9, 0.7])
    np.testing.assert_allclose(col["m__eg__qrank"], [3, 1, 2, 1])  # 1 = top of its query
    np.testing.assert_allclose(col["m__eg__qdmax"], [-0.7, 0, -0.4, 0], atol=1e-6)
    np.testing.assert_allclose(col["m__eg__qdmean"], [0.2 - 1.6 / 3, 0.9 - 1.6 / 3, 0.5 - 1.6 / 3, 0],
                               atol=1e-6)
    np.testing.assert_allclose(col["m__eg__qstd"], [np.std([0.2, 0.9, 0.5])] * 3 + [0.0], atol=1e-6)


def test_numbers_and_units_match_against_the_title():
    queries = pd.Series(["usb cable 2m", "usb cable 2m", "red shoes"])
    titles = pd.Series(["Cable 2 m long", "Cable 2ft", "Shoes size 9"])
    f = number_features(queries, titles)
    assert f["query_numbers"].tolist() == [1, 1, 0]
    assert f["num_match_frac"][:2].tolist() == [1.0, 0.0]
    assert f["num_bare_match_frac"][:2].tolist() == [1.0, 1.0]
    assert f["num_unit_conflict"][:2].tolist() == [0, 1]  # 2 m asked, 2 ft offered
    assert np.isnan(f["num_match_frac"][2])  # no number asked is not a mismatch


def test_leak_features_flag_books_and_order_asin_prefixes():
    f = leak_features(pd.Series(["0545010225", "B00ABCDEF1", "B08XYZ1234"]))
    assert f["leak_pid_digit"].tolist() == [1.0, 0.0, 0.0]
    assert f["leak_pid_prefix3"][1] < f["leak_pid_prefix3"][2]  # B00 listed before B08


def _split(n_models):
    keys = pd.DataFrame({"example_id": ["1", "2", "3"], "query_id": ["q", "q", "r"],
                         "product_id": ["B0", "0X", "B1"], "product_locale": "us"})
    rng = np.random.default_rng(0)
    outputs = {}
    for i in range(n_models):
        probs = rng.dirichlet(np.ones(4), 3)
        frame = pd.DataFrame(probs, columns=PROB_COLUMNS).assign(score=rng.normal(size=3))
        outputs[f"model-{i}"] = frame.assign(eg=probs @ np.array([1, .1, .01, 0]))
    return Split(keys, outputs)


@pytest.mark.parametrize("n_models", [1, 2])
def test_feature_groups_by_number_of_models_and_leak_only_on_request(n_models):
    clean = build_features(_split(n_models), None, None)
    groups = set(clean.group.values())
    assert ("pairwise" in groups) == (n_models > 1)
    assert {"model", "blend", "query_stat"} <= groups and "leak" not in groups
    assert all(name.replace("__", "").replace("_", "").isalnum() for name in clean.names)
    leaky = build_features(_split(n_models), None, None, leak=True)
    assert {n for n, g in leaky.group.items() if g == "leak"} == {
        "leak_pid_prefix2", "leak_pid_prefix3", "leak_pid_prefix4", "leak_pid_digit"}
    assert clean.matrix().shape == (3, len(clean.names))
