"""The whole pipeline on the real sample (tiny preset): artifacts, submissions, reruns, bad input."""
from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from data.synthetic import write_synthetic
from esci.artifacts import OOF_COLUMNS, TEST_COLUMNS, TEST_FOLD, RunPaths
from esci.config import load_config
from esci.leaderboard import METRICS
from esci.pipeline import main, run_pipeline
from tests.conftest import REPO, TINY_PRESET


def test_every_artifact_has_its_schema(tiny_run):
    paths = tiny_run
    assert paths.config.is_file()
    examples = pd.read_parquet(paths.examples)
    folds = pd.read_parquet(paths.folds)
    assert list(folds.columns) == ["example_id", "query_id", "query_norm", "fold"]
    train_ids = set(folds.loc[folds["fold"] != TEST_FOLD, "example_id"])
    test_ids = set(folds.loc[folds["fold"] == TEST_FOLD, "example_id"])
    for model in paths.models():
        oof = pd.read_parquet(paths.oof(model))
        test = pd.read_parquet(paths.test(model))
        assert list(oof.columns)[:len(OOF_COLUMNS)] == OOF_COLUMNS
        assert list(test.columns)[:len(TEST_COLUMNS)] == TEST_COLUMNS
        assert set(oof["example_id"]) == train_ids and len(oof) == len(train_ids)
        assert set(test["example_id"]) == test_ids
    board = pd.read_csv(paths.leaderboard_csv)
    for m in METRICS:
        assert {m, f"{m}_std", f"{m}_lo", f"{m}_hi"} <= set(board.columns)
    # Every stage of the tiny preset reached the leaderboard: baseline, cross-encoder, the stack with
    # and without the out-of-fold query-understanding features, and the blend.
    assert {"lexical_lgbm", "prior", "xenc_tiny", "stack", "stack-no-qu", "mean-blend"} <= set(board["model"])
    qu = pd.read_parquet(paths.features_dir / "query_understanding.parquet")
    assert set(qu["example_id"]) == set(examples["example_id"])
    assert paths.leaderboard_md.read_text().startswith("| model |")
    assert len(examples) == 2670


def test_submissions_are_in_competition_format(tiny_run):
    sub = tiny_run.submission_dir
    t1, t2, t3 = (pd.read_csv(sub / f"task{i}.csv", dtype=str) for i in (1, 2, 3))
    assert list(t1.columns) == ["query_id", "product_id"]
    assert list(t2.columns) == ["example_id", "esci_label"] and set(t2["esci_label"]) <= set("ESCI")
    assert list(t3.columns) == ["example_id", "substitute_label"]
    assert set(t3["substitute_label"]) <= {"substitute", "no_substitute"}
    chosen = pd.read_json(sub / "chosen.json", typ="series")["models"]["task1"]
    test = pd.read_parquet(tiny_run.test(chosen)).astype({"query_id": str, "product_id": str})
    ranked = test.sort_values(["query_id", "score"], ascending=[True, False], kind="mergesort")
    assert t1.values.tolist() == ranked[["query_id", "product_id"]].values.tolist()
    assert len(t2) == len(t3) == 16  # the sample's official test rows


def _run(tmp_path, *overrides):
    """The foundation stages only: the neural stages test their own reruns and determinism."""
    cfg = load_config(TINY_PRESET, [f"runs_dir={tmp_path}", f"data.data_dir={REPO / 'data/esci_sample'}",
                                    "finetune.enabled=false", "ensemble.enabled=false",
                                    "query_understanding.enabled=false",
                                    "figures.enabled=false", *overrides])
    return run_pipeline(cfg)


def test_rerun_skips_finished_stages_and_a_config_change_reruns_them(tmp_path, capsys):
    paths = _run(tmp_path)
    first = pd.read_parquet(paths.oof("lexical_lgbm"))
    capsys.readouterr()
    _run(tmp_path)
    out = capsys.readouterr().out
    assert "[prepare] up to date" in out and "[baseline] up to date" in out
    _run(tmp_path, "baseline.n_estimators=5")
    out = capsys.readouterr().out
    assert "[prepare] up to date" in out and "[baseline] up to date" not in out
    changed = pd.read_parquet(paths.oof("lexical_lgbm"))
    assert not changed["p_E"].equals(first["p_E"])


def test_same_seed_and_config_give_identical_predictions(tmp_path):
    a = _run(tmp_path / "a")
    b = _run(tmp_path / "b")
    for model in a.models():
        pd.testing.assert_frame_equal(pd.read_parquet(a.oof(model)), pd.read_parquet(b.oof(model)))
        pd.testing.assert_frame_equal(pd.read_parquet(a.test(model)), pd.read_parquet(b.test(model)))


def test_another_official_layout_directory_runs_end_to_end(tmp_path):
    data_dir = write_synthetic(tmp_path / "synthetic", n_queries=150, products_per_query=6, seed=1)
    code = main(["--config", str(TINY_PRESET), "--data-dir", str(data_dir), "--run", "other",
                 "--set", f"runs_dir={tmp_path / 'runs'}", "--set", "figures.enabled=false"])
    assert code == 0
    paths = RunPaths(tmp_path / "runs", "other")
    board = pd.read_csv(paths.leaderboard_csv)
    # synthetic labels follow lexical overlap, so the lexical model must beat the prior there
    by_model = board.set_index("model")
    assert by_model.loc["lexical_lgbm", "task2_micro_f1"] > by_model.loc["prior", "task2_micro_f1"] + 0.1
    assert (paths.submission_dir / "task3.csv").is_file()


def test_bad_input_exits_nonzero_with_one_line_and_no_leaderboard(tmp_path, sample_dir, capsys):
    ex = pd.read_parquet(sample_dir / "shopping_queries_dataset_examples.parquet")
    ex.loc[[1, 2], "esci_label"] = "Q"
    bad = tmp_path / "bad"
    bad.mkdir()
    ex.to_parquet(bad / "shopping_queries_dataset_examples.parquet", index=False)
    (bad / "shopping_queries_dataset_products.parquet").write_bytes(
        (sample_dir / "shopping_queries_dataset_products.parquet").read_bytes())
    code = main(["--config", str(TINY_PRESET), "--data-dir", str(bad), "--run", "bad",
                 "--set", f"runs_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "esci_label" in err and "rows [1, 2]" in err
    assert not (tmp_path / "runs" / "bad" / "leaderboard.csv").exists()
    assert not (tmp_path / "runs" / "bad" / "folds.parquet").exists()


@pytest.mark.slow
def test_run_all_script_reports_bad_input_through_its_exit_code(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "run_all.sh"), "--data-dir", str(tmp_path / "missing"),
                           "--run", "x", "--set", f"runs_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
