"""ONNX export of a fold model and the ``predict`` command, with a tiny from-scratch encoder
trained on the real sample (2 folds, fold models kept)."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pandas as pd
import pytest

from esci.artifacts import PROB_COLUMNS, RunPaths
from esci.config import load_config
from esci.pipeline import prepare
from finetune import stage
from finetune.batches import PairCollator
from finetune.kfold import prepare_inputs
from finetune.onnx_export import export_onnx, quantize_int8
from finetune.onnx_runtime import ort_outputs, session
from finetune.predict import predict_outputs
from finetune.score_pairs import build_fold_model, load_run, main
from tests.conftest import TINY_PRESET

MODEL = "xenc_onnx"
TINY = ["finetune.enabled=true", "finetune.backbone=scratch", "finetune.max_length=32", "finetune.batch_size=64",
        "finetune.learning_rate=0.002", "finetune.head_learning_rate=0.002", "finetune.char_buckets=4096",
        "finetune.word_buckets=4096", "finetune.unit_dim=8", "finetune.id_dim=4", "finetune.mlp_hidden=32",
        "finetune.checkpoint_every=0", "finetune.num_threads=1", "finetune.keep_fold_models=true",
        f"finetune.model_name={MODEL}", "cv.n_folds=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, sample_dir):
    runs = tmp_path_factory.mktemp("onnx_runs")
    cfg = load_config(TINY_PRESET, [f"runs_dir={runs}", f"data.data_dir={sample_dir}", "run=onnx", *TINY])
    paths = RunPaths(cfg.runs_dir, cfg.run)
    prepare(cfg, paths)
    stage.run(cfg, paths)
    return cfg, paths


def test_onnx_fp32_matches_torch_and_int8_is_quantised(run, tmp_path):
    cfg, paths = run
    prep = prepare_inputs(cfg.finetune, cfg.data, paths.root, pd.read_parquet(paths.examples),
                          pd.read_parquet(paths.root / "products.parquet"), pd.read_parquet(paths.folds))
    models = load_run(paths.root, MODEL)
    fold = models.folds[0]
    model = build_fold_model(models, fold)
    rows = np.flatnonzero(prep.frame["fold"].to_numpy() == fold.fold)  # this fold model's OOF rows
    pad = prep.backbone.pad_id
    ref = predict_outputs(model, prep.pairs, rows, pad, 64)
    fp32 = export_onnx(model, PairCollator(prep.pairs, pad)(rows[:2]), tmp_path / "m.onnx")
    got = ort_outputs(session(fp32), prep.pairs, rows, pad, 64)
    assert set(got) == {"task1", "task2", "task3"}
    for task in ref:
        assert got[task].shape == ref[task].shape
        assert np.abs(got[task] - ref[task]).max() <= 1e-4, task
    # the stage's own OOF file holds the same fold model's probabilities for these rows
    oof = pd.read_parquet(paths.oof(MODEL)).set_index("example_id").loc[prep.frame["example_id"].iloc[rows]]
    assert np.abs(oof[PROB_COLUMNS].to_numpy() - got["task2"]).max() <= 1e-4

    int8 = quantize_int8(fp32, tmp_path / "m8.onnx")
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    q = ort_outputs(session(int8), prep.pairs, rows, pad, 64)
    np.testing.assert_allclose(q["task2"].sum(axis=1), 1.0, atol=1e-5)
    assert ((q["task3"] >= 0) & (q["task3"] <= 1)).all()
    assert np.abs(q["task2"] - got["task2"]).max() > 0  # really a different (quantised) model


def test_predict_on_a_pairs_file_reproduces_the_stage_test_predictions(run, tmp_path):
    _, paths = run
    examples = pd.read_parquet(paths.examples)
    test_rows = examples[examples["split"] == "test"]
    pairs = tmp_path / "pairs.csv"
    test_rows[["example_id", "query", "product_id", "product_locale"]].to_csv(pairs, index=False)
    out = tmp_path / "scored.csv"
    assert main(["--run", str(paths.root), "--model", MODEL, "--pairs", str(pairs), "--out", str(out)]) == 0
    scored = pd.read_csv(out, dtype={"example_id": str, "product_id": str})
    assert scored["example_id"].tolist() == test_rows["example_id"].tolist()  # input order kept
    np.testing.assert_allclose(scored[PROB_COLUMNS].sum(axis=1), 1.0, atol=1e-6)
    # the stage averaged the same fold models over the official test rows
    stage_test = pd.read_parquet(paths.test(MODEL)).set_index("example_id").loc[scored["example_id"]]
    for col in PROB_COLUMNS + ["score", "p_sub"]:
        assert np.abs(scored[col].to_numpy() - stage_test[col].to_numpy()).max() <= 1e-4, col


def test_predict_one_query_against_the_products_file(run, tmp_path):
    _, paths = run
    out = tmp_path / "ranked.parquet"
    assert main(["--run", str(paths.root), "--model", MODEL, "--query", "usb c charging cable", "--locale", "es",
                 "--engine", "onnx-int8", "--out", str(out)]) == 0
    ranked = pd.read_parquet(out)
    products = pd.read_parquet(paths.root / "products.parquet")
    assert sorted(ranked["product_id"]) == sorted(products.loc[products["product_locale"] == "es", "product_id"])
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked["score"].is_monotonic_decreasing and ranked["score"].nunique() > 1


def _fails(capsys, argv, out, expect) -> None:
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_bad_input_gives_one_line_and_writes_nothing(run, tmp_path, capsys):
    _, paths = run
    base = ["--run", str(paths.root), "--model", MODEL]
    out = tmp_path / "o.csv"
    no_col = tmp_path / "no_col.csv"
    pd.DataFrame({"query": ["a"], "product_id": ["x"]}).to_csv(no_col, index=False)
    _fails(capsys, base + ["--pairs", str(no_col)], out, "['product_locale']")
    unknown = tmp_path / "unknown.csv"
    pd.DataFrame({"query": ["a", "b"], "product_id": ["B000NOPE", "B000NOPE2"],
                  "product_locale": ["us", "us"]}).to_csv(unknown, index=False)
    _fails(capsys, base + ["--pairs", str(unknown)], out, "2 pair(s) name products not in")
    _fails(capsys, base + ["--query", "cable", "--locale", "fr"], out, "no products of locale 'fr'")
    # a model trained without keeping its fold weights
    other = paths.root / "finetune" / "xenc_nokeep"
    other.mkdir()
    shutil.copy(paths.root / "finetune" / MODEL / "config.yaml", other / "config.yaml")
    _fails(capsys, ["--run", str(paths.root), "--model", "xenc_nokeep", "--query", "cable", "--locale", "us"],
           out, "finetune.keep_fold_models=true")
