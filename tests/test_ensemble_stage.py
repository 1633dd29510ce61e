"""The ensemble stage on a copy of the tiny real-sample run: outputs, schemas, 1 and 2+ base
models, leak features only on request and labelled."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from ensemble.config import EnsembleConfig
from ensemble.stage import _remove_stale, run
from esci.artifacts import OOF_COLUMNS, PROB_COLUMNS, TEST_COLUMNS, RunPaths, check_prediction_frame, \
    expected_gain, write_json, write_predictions
from esci.config import load_config
from esci.leaderboard import build_leaderboard
from tests.conftest import REPO, TINY_PRESET

BASE = "lexical_lgbm"
SECOND = "synthetic_noisy"  # SYNTHETIC second base model: the baseline's outputs plus noise


def _copy_run(tiny_run, tmp_path_factory, name):
    runs = tmp_path_factory.mktemp(name)
    shutil.copytree(tiny_run.root, runs / "tiny")
    return RunPaths(runs, "tiny")


def _cfg(paths, *overrides):
    # The tiny run also holds the cross-encoder; these tests control the base set themselves.
    return load_config(TINY_PRESET, [f"runs_dir={paths.root.parent}", "ensemble.enabled=true",
                                     "ensemble.n_estimators=20", "ensemble.bootstrap=50",
                                     "ensemble.exclude=[prior, xenc_tiny]", *overrides])


def _add_noisy_model(paths):
    rng = np.random.default_rng(0)
    for oof in (True, False):
        path = paths.oof(BASE) if oof else paths.test(BASE)
        df = pd.read_parquet(path)
        probs = 0.7 * df[PROB_COLUMNS].to_numpy() + 0.3 * rng.dirichlet(np.ones(4), len(df))
        df[PROB_COLUMNS] = probs
        df["score"] = expected_gain(df).to_numpy()
        write_predictions(df, paths.oof(SECOND) if oof else paths.test(SECOND), oof=oof)
    write_json({"description": "SYNTHETIC test model", "leak": False},
               paths.oof_dir / f"{SECOND}.meta.json")


@pytest.fixture(scope="module")
def one_model(tiny_run, tmp_path_factory):
    paths = _copy_run(tiny_run, tmp_path_factory, "ens_one")
    outputs = run(_cfg(paths), paths)
    return paths, outputs


@pytest.fixture(scope="module")
def two_models_leak(tiny_run, tmp_path_factory):
    paths = _copy_run(tiny_run, tmp_path_factory, "ens_two")
    _add_noisy_model(paths)
    run(_cfg(paths, "ensemble.leak_features=true"), paths)
    return paths


def test_outputs_exist_in_the_artifact_schema_over_the_base_models_rows(one_model):
    paths, outputs = one_model
    assert all(p.exists() for p in outputs)
    base_oof = pd.read_parquet(paths.oof(BASE)).set_index("example_id")
    base_test = pd.read_parquet(paths.test(BASE))
    for model in ("stack", "mean-blend"):
        oof, test = pd.read_parquet(paths.oof(model)), pd.read_parquet(paths.test(model))
        check_prediction_frame(oof, oof=True)
        check_prediction_frame(test, oof=False)
        assert list(oof.columns[:len(OOF_COLUMNS)]) == OOF_COLUMNS
        assert list(test.columns[:len(TEST_COLUMNS)]) == TEST_COLUMNS
        assert set(oof["example_id"]) == set(base_oof.index)
        assert set(test["example_id"]) == set(base_test["example_id"])
        folds = oof.set_index("example_id")["fold"]
        assert (folds.to_numpy() == base_oof.loc[folds.index, "fold"].to_numpy()).all()
        assert json.loads((paths.oof_dir / f"{model}.meta.json").read_text())["leak"] is False
    assert "p_sub" in pd.read_parquet(paths.oof("stack")).columns  # task-3 binary stacker


def test_single_model_blend_keeps_its_probabilities_and_ordering(one_model):
    paths, _ = one_model
    base = pd.read_parquet(paths.oof(BASE)).sort_values("example_id").reset_index(drop=True)
    blend = pd.read_parquet(paths.oof("mean-blend")).sort_values("example_id").reset_index(drop=True)
    np.testing.assert_allclose(blend[PROB_COLUMNS], base[PROB_COLUMNS], atol=1e-9)
    # Rank-mean of one model keeps each query's order.
    ranks = pd.DataFrame({"a": base["score"], "b": blend["score"]}).groupby(
        base["query_id"]).rank(method="dense")
    assert (ranks["a"] == ranks["b"]).all()


def test_diagnostics_written_and_no_leak_feature_by_default(one_model):
    paths, _ = one_model
    out = paths.root / "ensemble"
    imp = pd.read_csv(out / "feature_importance.csv")
    assert set(imp["task"]) == {"task1", "task2", "task3"} and set(imp["model"]) == {"stack", "stack-no-qu"}
    assert "leak" not in set(imp["group"]) and not imp["feature"].str.startswith("leak").any()
    assert {"model", "blend", "query_stat", "text"} <= set(imp["group"])
    assert (out / "feature_importance.png").stat().st_size > 1000
    task1 = pd.read_csv(out / "task1_comparison.csv")
    assert "stack: LGBMRanker" in set(task1["ordering"])
    assert task1["reference"].iloc[0] == f"{BASE}: expected gain"
    gaps = pd.read_csv(out / "stack_vs_best.csv")
    assert (gaps["diff_lo"] <= gaps["diff_hi"]).all()
    # The query-understanding group is the only difference between stack and stack-no-qu.
    qu = imp["feature"].str.startswith("qu_")
    assert qu[imp["model"] == "stack"].any() and not qu[imp["model"] == "stack-no-qu"].any()
    assert set(imp.loc[(imp["model"] == "stack") & ~qu, "feature"]) == set(imp.loc[imp["model"] == "stack-no-qu", "feature"])
    qu_gap = pd.read_csv(out / "qu_vs_no_qu.csv")
    assert set(qu_gap["a"]) == {"stack"} and set(qu_gap["b"]) == {"stack-no-qu"}
    assert EnsembleConfig().leak_features is False
    for preset in ("default.yaml", "tiny.yaml"):
        assert load_config(REPO / "configs" / preset).ensemble.leak_features is False


def test_two_base_models_give_pairwise_features_and_an_averaging_blend(two_models_leak):
    paths = two_models_leak
    imp = pd.read_csv(paths.root / "ensemble" / "feature_importance.csv")
    pair = imp.loc[imp["group"] == "pairwise", "feature"]
    assert pair.str.startswith(f"diff__{BASE}__{SECOND}__").any()
    rows = pd.read_parquet(paths.oof(BASE))["example_id"]
    frames = [pd.read_parquet(paths.oof(m)).set_index("example_id").loc[rows]
              for m in (BASE, SECOND, "mean-blend")]
    np.testing.assert_allclose(frames[2][PROB_COLUMNS], (frames[0][PROB_COLUMNS] + frames[1][PROB_COLUMNS]) / 2,
                               atol=1e-9)


def test_leak_stack_is_separate_and_labelled_on_the_leaderboard(two_models_leak):
    paths = two_models_leak
    assert json.loads((paths.oof_dir / "stack-leak.meta.json").read_text())["leak"] is True
    imp = pd.read_csv(paths.root / "ensemble" / "feature_importance.csv")
    assert set(imp.loc[imp["group"] == "leak", "model"]) == {"stack-leak"}
    gap = pd.read_csv(paths.root / "ensemble" / "leak_vs_clean.csv")
    assert (gap["a"] == "stack-leak").all() and (gap["diff_lo"] <= gap["diff_hi"]).all()
    board = build_leaderboard(paths, n_boot=20).set_index("model")
    assert {"stack", "stack-leak", "mean-blend", BASE, SECOND} <= set(board.index)
    assert board.loc["stack-leak", "leak"] and not board.loc["stack", "leak"]
    assert "stack-leak (leak)" in paths.leaderboard_md.read_text()


def test_stale_own_outputs_are_removed_and_base_models_kept(tmp_path):
    paths = RunPaths(tmp_path, "r")
    for model in ("stack", "stack-leak", "mean-blend", BASE):
        for f in (paths.oof(model), paths.test(model)):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"x")
    _remove_stale(paths, {"stack", "mean-blend"})
    assert paths.models() == sorted([BASE, "mean-blend", "stack"])


def test_base_model_with_other_rows_stops_with_a_one_line_error(one_model, tmp_path):
    src, _ = one_model
    shutil.copytree(src.root, tmp_path / "tiny")
    paths = RunPaths(tmp_path, "tiny")
    df = pd.read_parquet(paths.oof(BASE)).iloc[1:]
    df.to_parquet(paths.oof("short_model"), index=False)
    pd.read_parquet(paths.test(BASE)).to_parquet(paths.test("short_model"), index=False)
    before = paths.oof("stack").stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"short_model\.parquet covers different rows.*1 missing"):
        run(_cfg(paths), paths)
    assert paths.oof("stack").stat().st_mtime_ns == before  # nothing half-written
