"""Query understanding end to end on the real sample with configs/qu_tiny.yaml: the stage's
out-of-fold features, the tables command, determinism and bad input."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from esci.artifacts import TEST_FOLD, RunPaths
from esci.config import load_config
from esci.pipeline import prepare as prepare_run
from query_understanding import stage, tables
from query_understanding.cv import prior_metrics, run_fold, split_rows
from query_understanding.features import FEATURE_COLUMNS
from query_understanding.inputs import prepare
from query_understanding.settings import load_qu_config, read_run
from tests.conftest import REPO, TINY_PRESET

QU_TINY = REPO / "configs" / "qu_tiny.yaml"


@pytest.fixture(scope="module")
def qu_run(tmp_path_factory, sample_dir):
    """A prepared tiny run (3 folds) and the query-understanding stage run on it."""
    runs = tmp_path_factory.mktemp("qu_runs")
    cfg = load_config(TINY_PRESET, [f"runs_dir={runs}", f"data.data_dir={sample_dir}", "run=qu_tiny"])
    paths = RunPaths(cfg.runs_dir, cfg.run)
    prepare_run(cfg, paths)
    qu = load_qu_config(QU_TINY)
    outputs = stage.run(SimpleNamespace(query_understanding=qu), paths)
    return paths, qu, outputs


@pytest.fixture(scope="module")
def qu_data(qu_run):
    paths, qu, _ = qu_run
    return prepare(*read_run(paths), qu, paths.root)


def test_stage_writes_one_numeric_feature_row_per_example(qu_run):
    paths, _, outputs = qu_run
    feature_file = paths.features_dir / "query_understanding.parquet"
    assert feature_file in outputs and all(p.is_file() for p in outputs)
    feats = pd.read_parquet(feature_file)
    examples = pd.read_parquet(paths.examples)
    assert list(feats.columns) == ["example_id"] + FEATURE_COLUMNS
    assert sorted(feats["example_id"]) == sorted(examples["example_id"].astype(str))
    values = feats[FEATURE_COLUMNS]
    assert all(values[c].dtype == np.float32 for c in FEATURE_COLUMNS)
    assert ((values >= 0) & (values <= 1) | values.isna()).all().all()
    assert set(values["qu_has_brand"].dropna().unique()) <= {0.0, 1.0}
    assert values["qu_pt_agree"].notna().mean() > 0.9 and values["qu_tw_overlap"].notna().mean() > 0.5


def test_features_are_out_of_fold(qu_run, qu_data):
    paths, qu, _ = qu_run
    preds = pd.read_parquet(paths.root / "query_understanding" / "query_predictions.parquet")
    folds = pd.read_parquet(paths.folds)
    examples = pd.read_parquet(paths.examples)
    fold_of_query = examples.assign(fold=folds.set_index("example_id").loc[examples["example_id"], "fold"].to_numpy()) \
        .groupby("query_id")["fold"].first()
    assert preds["query_id"].is_unique and set(preds["query_id"]) == set(fold_of_query.index)
    # Each query's predictions come from the model whose held-out fold is the query's own fold.
    assert (preds["model_fold"].to_numpy() == fold_of_query.loc[preds["query_id"]].to_numpy()).all()
    assert (preds.loc[preds["model_fold"] == TEST_FOLD, "query_id"].isin(
        fold_of_query.index[fold_of_query == TEST_FOLD])).all()
    # ... and that model's training rows never include its held-out fold or the test queries.
    data = qu_data
    for fold in range(3):
        train, valid, held, test = split_rows(data, fold, qu.valid_fraction, qu.seed)
        assert not set(train) & set(held) and not set(train) & set(test) and not set(train) & set(valid)
        assert (data.fold[train] != fold).all() and (data.fold[held] == fold).all()
        assert not set(data.labels["query_norm"].iloc[train]) & set(data.labels["query_norm"].iloc[valid])


def test_stage_writes_readable_clusters_and_fold_metrics(qu_run):
    paths, qu, _ = qu_run
    out = paths.root / "query_understanding"
    pt = pd.read_csv(out / "clusters_pt.csv")
    qc = pd.read_csv(out / "clusters_qc.csv")
    assert len(pt) == qu.pt_clusters and len(qc) == qu.qc_clusters
    assert pt["top_terms"].str.len().gt(0).all() and pt["size"].sum() == qc["size"].sum()
    metrics = pd.read_csv(out / "fold_metrics.csv")
    assert sorted(metrics["fold"]) == [0, 1, 2]
    for col in ("pt_micro_f1", "qc_macro_f1", "ner_f1", "tw_f1", "all_macro_f1"):
        assert metrics[col].between(0, 1).all()
    labels = pd.read_parquet(out / "weak_labels.parquet")
    assert {"words", "ner", "tw", "intent", "pt", "qc"} <= set(labels.columns)


def test_tables_are_written_and_finished_models_reused(qu_run, qu_data, monkeypatch):
    paths, qu, _ = qu_run
    out = paths.root / "query_understanding" / "tables"
    names = {"ner_only", "joint_intent_ner"}
    frame = tables.run_variants(qu_data, qu, [0], out / "results.jsonl", names)
    md = tables.write_tables(frame, qu, qu_data, [0], out).read_text()
    for title in ("Table 3 analogue", "Table 4 analogue", "Table 5 analogue", "Table 6 analogue",
                  "Table 7 analogue", "Target Table 1 analogue"):
        assert title in md
    target = pd.read_csv(out / "target_table1_joint_intent_ner.csv")
    assert len(target) == 5 and target["f1"].notna().all()
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    # A rerun reads the finished models back instead of training them again.
    monkeypatch.setattr(tables, "run_fold", lambda *a, **k: pytest.fail("retrained a finished model"))
    again = tables.run_variants(qu_data, qu, [0], out / "results.jsonl", names)
    pd.testing.assert_frame_equal(again, frame)


def test_prior_reference_predicts_the_most_frequent_training_cluster(qu_run, qu_data):
    _, qu, _ = qu_run
    train, _, held, _ = split_rows(qu_data, 0, qu.valid_fraction, qu.seed)
    lab = qu_data.labels
    top = pd.Series([c for cs in lab["pt"].iloc[train] for c in cs]).value_counts().idxmax()
    held_pt = [cs for cs in lab["pt"].iloc[held] if cs]
    hits = sum(top in cs for cs in held_pt)
    expected_micro = 2 * hits / (len(held_pt) + sum(map(len, held_pt)))  # one prediction per query
    m = prior_metrics(qu_data, qu, 0)
    assert m["pt_micro_f1"] == pytest.approx(expected_micro)
    assert m["ner_f1"] == 0.0 and m["n_pt"] == len(held_pt)


def test_tables_paired_differences():
    frame = pd.DataFrame({"variant": ["a", "a", "b", "b"], "fold": [0, 1, 0, 1], "m": [0.5, 0.7, 0.4, 0.5]})
    # Per-fold differences 10 and 20 points: mean 15, std 7.1; relative (0.6 - 0.45) / 0.45.
    assert tables.fmt_delta(frame, "a", "b", "m") == "+15.0 ± 7.1 (+33.3%)"
    assert tables.fmt_abs(frame.loc[frame["variant"] == "a", "m"]) == "0.600 ± 0.141"
    zero = pd.DataFrame({"variant": ["a", "b"], "fold": [0, 0], "m": [0.1, 0.0]})
    assert tables.fmt_delta(zero, "a", "b", "m") == "+10.0 (n/a)"


def test_same_seed_same_predictions(qu_data, tmp_path):
    import dataclasses
    cfg = dataclasses.replace(qu_data_cfg(), tasks=["pt", "ner"], entity_aware=True, epochs=1)
    # Two directories: the second run trains again instead of reading the first one's predictions.
    a, b = run_fold(qu_data, cfg, 1, tmp_path / "a"), run_fold(qu_data, cfg, 1, tmp_path / "b")
    assert np.array_equal(a.outputs["pt"], b.outputs["pt"])
    assert all(np.array_equal(x, y) for x, y in zip(a.outputs["ner"], b.outputs["ner"]))


def test_qu_trains_in_the_finetune_loop_and_a_killed_fold_resumes_bit_identically(qu_data, tmp_path):
    """The QU model goes through finetune.train's loop: its progress record, checkpoints and
    resume, here with the joint intent pass and its own optimizer, which the checkpoint must hold."""
    import dataclasses
    cfg = dataclasses.replace(qu_data_cfg(), tasks=["ner"], joint_intent=True, entity_aware=False, epochs=2)
    reference = run_fold(qu_data, cfg, 0, tmp_path / "whole")
    progress = json.loads((tmp_path / "whole" / "progress.json").read_text())
    per_epoch = progress["total_steps"] // 2
    assert progress["tasks"] == ["ner", "intent"] and progress["step"] == progress["total_steps"]
    assert [h["step"] for h in progress["history"]] == [per_epoch, 2 * per_epoch]  # selected per epoch
    assert progress["best_step"] in (per_epoch, 2 * per_epoch) and "ner_f1" in progress["history"][0]

    class Killed(Exception):
        pass

    def kill(step):
        if step == per_epoch + 2:
            raise Killed
    with pytest.raises(Killed):
        run_fold(qu_data, cfg, 0, tmp_path / "killed", on_step=kill)
    assert (tmp_path / "killed" / "latest.json").is_file()
    seen = []
    resumed = run_fold(qu_data, cfg, 0, tmp_path / "killed", on_step=seen.append)
    assert seen[0] == per_epoch + 1 and seen[-1] == 2 * per_epoch  # from the epoch-1 checkpoint
    for task in ("ner", "intent"):
        assert all(np.array_equal(x, y) for x, y in zip(resumed.outputs[task], reference.outputs[task]))
    assert resumed.metrics == reference.metrics
    assert not (tmp_path / "killed" / "checkpoints").exists()


def qu_data_cfg():
    return load_qu_config(QU_TINY)


def test_bad_config_and_missing_run_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="query_understanding.tasks"):
        load_qu_config(QU_TINY, ["tasks=[pt, brand]"])
    with pytest.raises(ValueError, match="unknown key"):
        load_qu_config(QU_TINY, ["entity_count=3"])
    with pytest.raises(FileNotFoundError, match="esci.pipeline"):
        read_run(RunPaths(tmp_path, "nothing"))
    assert tables.main(["--run", "nothing", "--runs-dir", str(tmp_path), "--config", str(QU_TINY)]) == 2
