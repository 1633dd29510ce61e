"""The fine-tuning stage end to end on the real sample with a tiny from-scratch backbone:
valid prediction files, confident learning, checkpoint resume and no-op reruns."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from esci.artifacts import TEST_FOLD, RunPaths, check_prediction_frame
from esci.config import load_config
from esci.leaderboard import build_leaderboard
from esci.pipeline import prepare
from finetune import stage
from finetune.kfold import _reset_if_changed, fold_rows, prepare_inputs
from finetune.backbone import build_encoder
from finetune.model import CrossEncoder
from finetune.train import FoldData, train_and_predict
from tests.conftest import TINY_PRESET

# The finetune lines proposed for configs/tiny.yaml: a from-scratch encoder, seconds per fold.
TINY_FINETUNE = ["finetune.enabled=true", "finetune.backbone=scratch", "finetune.max_length=32",
                 "finetune.batch_size=64", "finetune.learning_rate=0.002", "finetune.head_learning_rate=0.002",
                 "finetune.char_buckets=4096", "finetune.word_buckets=4096", "finetune.unit_dim=8",
                 "finetune.id_dim=4", "finetune.mlp_hidden=32", "finetune.checkpoint_every=0",
                 "finetune.num_threads=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, sample_dir):
    runs = tmp_path_factory.mktemp("ft_runs")
    cfg = load_config(TINY_PRESET, [f"runs_dir={runs}", f"data.data_dir={sample_dir}", "run=ft",
                                    *TINY_FINETUNE, "finetune.cleanlab=true", "finetune.model_name=xenc_tiny"])
    paths = RunPaths(cfg.runs_dir, cfg.run)
    prepare(cfg, paths)
    outputs = stage.run(cfg, paths)
    return cfg, paths, outputs


def test_stage_writes_valid_prediction_files(run):
    cfg, paths, outputs = run
    folds = pd.read_parquet(paths.folds)
    n_train = int((folds["fold"] != TEST_FOLD).sum())
    for model in ("xenc_tiny", "xenc_tiny_cl"):
        oof, test = pd.read_parquet(paths.oof(model)), pd.read_parquet(paths.test(model))
        check_prediction_frame(oof, oof=True)
        check_prediction_frame(test, oof=False)
        assert len(oof) == n_train and set(oof["fold"]) == {0, 1, 2}
        assert len(test) == int((folds["fold"] == TEST_FOLD).sum())
        assert oof["p_sub"].between(0, 1).all() and oof["score"].between(0, 1).all()
        assert oof["p_E"].std() > 0  # not a constant model
        assert (paths.oof_dir / f"{model}.meta.json").is_file()
    assert all(p.exists() for p in outputs)
    board = build_leaderboard(paths, n_boot=10)
    assert {"xenc_tiny", "xenc_tiny_cl"} <= set(board["model"])
    assert (paths.root / "finetune" / "xenc_tiny" / "config.yaml").read_text().count("backbone: scratch") == 1


def test_confident_learning_removes_the_configured_share_from_training(run):
    cfg, paths, _ = run
    issues = pd.read_csv(paths.root / "cleanlab" / "xenc_tiny_issues.csv", dtype={"example_id": str})
    assert list(issues.columns) == ["example_id", "given_label", "suggested_label", "label_quality"]
    oof = pd.read_parquet(paths.oof("xenc_tiny"))
    assert len(issues) == round(cfg.finetune.cleanlab_fraction * len(oof))
    given = oof.set_index("example_id").loc[issues["example_id"], "esci_label"]
    assert given.tolist() == issues["given_label"].tolist()
    assert issues["label_quality"].is_monotonic_increasing
    # the removed rows never train or validate any fold model, but are still predicted out of fold
    prep = prepare_inputs(cfg.finetune, cfg.data, paths.root, pd.read_parquet(paths.examples),
                          pd.read_parquet(paths.root / "products.parquet"), pd.read_parquet(paths.folds))
    excluded = prep.frame["example_id"].isin(issues["example_id"]).to_numpy()
    for k in range(3):
        train, valid, predict = fold_rows(prep, k, cfg.finetune, excluded)
        assert not excluded[train].any() and not excluded[valid].any()
        assert excluded[predict].sum() == (excluded & (prep.frame["fold"] == k).to_numpy()).sum()
    assert set(pd.read_parquet(paths.oof("xenc_tiny_cl"))["example_id"]) == set(oof["example_id"])


def test_rerunning_a_finished_stage_trains_nothing(run, monkeypatch):
    cfg, paths, _ = run
    before = pd.read_parquet(paths.oof("xenc_tiny"))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")
    monkeypatch.setattr("finetune.train.Accelerator", no_training)
    stage.run(cfg, paths)
    pd.testing.assert_frame_equal(pd.read_parquet(paths.oof("xenc_tiny")), before)


def test_a_killed_fold_resumes_at_its_step_and_matches_an_uninterrupted_run(run, tmp_path):
    cfg, paths, _ = run
    fcfg = dataclasses.replace(cfg.finetune, epochs=2, batch_size=32, checkpoint_every=3, eval_every=4,
                               ema=True, mixup=True, mixup_prob=1.0)
    prep = prepare_inputs(fcfg, cfg.data, paths.root, pd.read_parquet(paths.examples),
                          pd.read_parquet(paths.root / "products.parquet"), pd.read_parquet(paths.folds))
    labelled = np.flatnonzero(prep.labels >= 0)
    data = FoldData(prep.pairs, prep.labels, prep.frame["query_id"].to_numpy(), labelled[:256],
                    labelled[256:320], labelled[320:420], prep.backbone.pad_id, seed=7)

    def build():
        return CrossEncoder(build_encoder(prep.backbone, fcfg, 7), fcfg, ["task1", "task2", "task3"],
                            prep.pairs.id_sizes, prep.tables)
    reference = train_and_predict(build, data, fcfg, tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill_at_5(step):
        if step == 5:
            raise Killed
    with pytest.raises(Killed):
        train_and_predict(build, data, fcfg, tmp_path / "killed", on_step=kill_at_5)
    assert (tmp_path / "killed" / "latest.json").is_file()
    seen = []
    resumed = train_and_predict(build, data, fcfg, tmp_path / "killed", on_step=seen.append)
    assert seen[0] == 4 and seen[-1] == 16  # from the step-3 checkpoint to the end: 2 epochs x 8 steps
    for task in reference:
        np.testing.assert_array_equal(resumed[task], reference[task])  # RNG, data order, EMA all restored
    assert not (tmp_path / "killed" / "checkpoints").exists()  # cleared once the fold is done

    def must_not_build():
        raise AssertionError("finished fold rebuilt")
    again = train_and_predict(must_not_build, data, fcfg, tmp_path / "killed")
    assert all(np.array_equal(again[t], resumed[t]) for t in resumed)


def test_a_changed_config_wipes_old_checkpoints(tmp_path):
    (tmp_path / "multitask" / "fold0").mkdir(parents=True)
    _reset_if_changed(tmp_path, "aaa")
    _reset_if_changed(tmp_path, "aaa")
    assert (tmp_path / "multitask" / "fold0").is_dir()
    _reset_if_changed(tmp_path, "bbb")
    assert not (tmp_path / "multitask").exists()
    assert (tmp_path / "fingerprint.json").is_file()
