"""`accelerate launch` with two CPU processes (gloo) runs the fine-tuning k-fold on the real sample
with the tiny from-scratch encoder: each process trains on half the batches and scores half the
prediction rows, and the gathered out-of-fold file holds every example exactly once, the same
rows as a one-process run.

`accelerate launch --cpu --num_processes 2` starts ONE process (Accelerate 1.15's simple launcher
ignores the count on CPU); two CPU processes need the torchrun launcher (`--multi_gpu`) plus
`ACCELERATE_USE_CPU=1`, which makes Accelerate pick the MULTI_CPU type and the gloo backend.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esci.artifacts import RunPaths, check_prediction_frame
from esci.config import load_config
from esci.pipeline import prepare
from finetune import launch
from tests.conftest import TINY_PRESET

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
TINY = ["finetune.backbone=scratch", "finetune.max_length=32", "finetune.batch_size=64",
        "finetune.learning_rate=0.002", "finetune.head_learning_rate=0.002", "finetune.char_buckets=4096",
        "finetune.word_buckets=4096", "finetune.unit_dim=8", "finetune.id_dim=4", "finetune.mlp_hidden=32",
        "finetune.checkpoint_every=0", "finetune.num_threads=1"]


def _free_port() -> int:
    with socket.socket() as s:  # not the default 29500: other test sessions may hold it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "finetune.launch", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env_extra}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _progress(root: Path, model: str) -> dict[int, dict]:
    fold_dirs = sorted((root / "finetune" / model / "folds" / "multitask").glob("fold*"))
    return {int(d.name[4:]): json.loads((d / "progress.json").read_text()) for d in fold_dirs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_dir):
    runs_dir = tmp_path_factory.mktemp("dist_runs")
    # Two folds keep the test near a minute on two shared cores; every row is still predicted out of fold.
    cfg = load_config(TINY_PRESET, [f"runs_dir={runs_dir}", f"data.data_dir={sample_dir}", "run=dist",
                                    "cv.n_folds=2"])
    paths = RunPaths(cfg.runs_dir, cfg.run)
    prepare(cfg, paths)
    args = ["--run", "dist", "--config", str(TINY_PRESET), "--set", f"runs_dir={runs_dir}",
            "--set", f"data.data_dir={sample_dir}", *[a for s in TINY for a in ("--set", s)]]
    # One process first, in this process (it also fills the tokenizer / pairs cache both runs read).
    assert launch.main([*args, "--set", "finetune.model_name=one"]) == 0
    proc = _launch([*args, "--set", "finetune.model_name=two"], {"ACCELERATE_USE_CPU": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return paths, args, proc


@pytest.mark.slow
def test_two_processes_split_training_and_prediction(runs):
    paths, _, proc = runs
    assert "[finetune] 2 process(es) wrote" in proc.stdout
    one, two = _progress(paths.root, "one"), _progress(paths.root, "two")
    assert sorted(one) == sorted(two) == [0, 1]
    for k in one:
        assert one[k]["num_processes"] == 1 and two[k]["num_processes"] == 2
        # every process took every other batch: half the optimizer steps each (epochs=1, no accumulation)
        assert two[k]["step"] == math.ceil(one[k]["step"] / 2) < one[k]["step"]
        shares = two[k]["predict_rows_per_process"]
        assert len(shares) == 2 and min(shares) > 0 and sum(shares) == one[k]["predict_rows_per_process"][0]


@pytest.mark.slow
def test_gathered_predictions_have_every_row_once(runs):
    paths, _, _ = runs
    folds = pd.read_parquet(paths.folds)
    for kind, read in (("oof", paths.oof), ("test", paths.test)):
        one, two = pd.read_parquet(read("one")), pd.read_parquet(read("two"))
        check_prediction_frame(two, oof=kind == "oof")
        assert two["example_id"].is_unique and len(two) == len(one)
        assert two["example_id"].tolist() == one["example_id"].tolist()  # same rows, same order
        expected = folds.loc[(folds["fold"] >= 0) == (kind == "oof"), "example_id"]
        assert set(two["example_id"]) == set(expected)
        if kind == "oof":
            assert (two["fold"].to_numpy() == one["fold"].to_numpy()).all()
            assert two["p_E"].std() > 0  # a trained model, not a constant
        diff = np.abs(two[["p_E", "p_S", "p_C", "p_I"]].to_numpy() - one[["p_E", "p_S", "p_C", "p_I"]].to_numpy())
        print(f"{kind}: max |p(2 processes) - p(1 process)| = {diff.max():.4f}")  # information only
