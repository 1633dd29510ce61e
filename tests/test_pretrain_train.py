"""The pre-training loop end to end on the real sample with the tiny preset (scratch backbone)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
import json

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from esci.config import load_config
from pretrain.config import TASK_WEIGHTS, PretrainConfig, checked
from pretrain.corpus import EmptyCorpusError, build_corpus, load_corpus, read_products
from pretrain.model import MultiTaskModel, load_backbone
from pretrain.outputs import write_pretrain_dir
from pretrain.train import build_tokenizer, main, train

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "esci_sample"

TINY = REPO / "configs" / "pretrain_tiny.yaml"
TASKS = [w.removesuffix("_weight") for w in TASK_WEIGHTS]


def tiny_config(runs_dir, **changes) -> PretrainConfig:
    cfg = load_config(TINY, [f"runs_dir={runs_dir}", f"data_dir={SAMPLE_DIR}"], cls=PretrainConfig)
    return dataclasses.replace(cfg, **changes)


def read_log(cfg: PretrainConfig, where: str = "pretrain") -> pd.DataFrame:
    path = REPO / cfg.runs_dir / cfg.run / where / "loss_log.jsonl"
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny run: (config, metrics)."""
    cfg = tiny_config(tmp_path_factory.mktemp("runs"), run="reference")
    return cfg, train(cfg, show_progress=False)


def test_every_task_logs_a_finite_loss_each_step(reference):
    cfg, metrics = reference
    log = read_log(cfg)
    assert log["step"].tolist() == list(range(1, cfg.max_steps + 1))
    assert metrics["steps"] == cfg.max_steps
    for task in TASKS + ["loss"]:
        logged = log[task].dropna()  # null: no product of the step had a brand/colour label
        assert len(logged) >= 0.8 * len(log) and np.isfinite(logged).all(), task
    # warm-up then cosine decay
    peak = int(cfg.warmup_ratio * cfg.max_steps)
    assert log["lr"].iloc[0] < log["lr"].iloc[peak - 1] <= cfg.learning_rate * 1.0001
    assert log["lr"].iloc[-1] < 0.05 * log["lr"].max()


def test_mlm_and_contrastive_losses_fall_on_the_training_stream(reference):
    cfg, _ = reference
    log = read_log(cfg)
    for task in ("mlm", "infonce", "simcse"):
        first, last = log[task].iloc[:5].mean(), log[task].iloc[-5:].mean()
        assert last < first * 0.97, (task, first, last)


def test_heldout_mlm_loss_falls(reference):
    _, metrics = reference
    assert metrics["heldout_products"] > 100
    assert metrics["heldout_mlm_loss_after"] < metrics["heldout_mlm_loss_before"] - 0.2


def test_output_is_a_loadable_checkpoint_with_brand_and_colour_tables(reference):
    cfg, metrics = reference
    out = REPO / cfg.runs_dir / cfg.run / "pretrain"
    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    for name in ("brand", "color"):
        vocab = json.loads((out / f"{name}_vocab.json").read_text())
        table = torch.load(out / f"{name}_embeddings.pt")
        assert table.shape == (len(vocab["values"]), model.config.hidden_size)
        assert vocab["trained"] and len(vocab["values"]) == metrics[f"{name}_vocab"]
    saved = checked(load_config(out / "pretrain_config.yaml", cls=PretrainConfig))
    assert saved == checked(cfg)
    assert len((out / "loss_log.jsonl").read_text().splitlines()) == cfg.max_steps
    coverage = pd.read_csv(out / "vocab_coverage.csv").set_index("locale")
    assert coverage.loc["jp", "unk_char_rate_after"] < coverage.loc["jp", "unk_char_rate_before"]
    assert not list(out.parent.glob(".pretrain.*"))  # no temp dir left behind


@pytest.mark.parametrize("backbone", ["scratch", "minilm"])
def test_save_then_from_pretrained_gives_identical_outputs(backbone, tmp_path):
    """Round trip of the saved encoder + tokenizer; minilm also covers the resized embeddings."""
    cfg = tiny_config(tmp_path, backbone=backbone, tokenizer_text_chars=200, scratch_vocab_size=800)
    products, source = read_products(SAMPLE_DIR)
    corpus = build_corpus(products.sample(300, random_state=0), cfg, source)
    tokenizer, _, added = build_tokenizer(cfg, corpus)
    encoder, head, _ = load_backbone(cfg, tokenizer)
    if backbone == "minilm":
        assert added and encoder.get_input_embeddings().num_embeddings == len(tokenizer) > 30522
    model = MultiTaskModel(encoder, head, cfg, len(corpus.brand_vocab), len(corpus.color_vocab))
    torch.manual_seed(1)
    with torch.no_grad():  # weights unlike any fresh initialisation or the shipped checkpoint
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out = write_pretrain_dir(tmp_path / "ckpt", model, tokenizer, corpus, "run: x\n", tmp_path, {})
    texts = ["<jp> ワイヤレスイヤホン bluetooth ブラック", "<us> Apple Carplay Double Din Car Stereo"]
    reloaded_tok = AutoTokenizer.from_pretrained(out)
    assert reloaded_tok(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert tokenizer.unk_token_id not in tokenizer(texts[0])["input_ids"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    reloaded, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    reloaded.eval()
    encoder.eval()
    with torch.no_grad():
        a, b = encoder(**batch), reloaded(**batch)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    assert torch.equal(a.pooler_output, b.pooler_output)


def test_resume_continues_the_schedule_where_the_checkpoint_left_it(reference):
    ref_cfg, ref_metrics = reference
    cfg = dataclasses.replace(ref_cfg, run="resumed")
    crash_at = cfg.save_every + 3

    def crash(row):
        if row["step"] == crash_at:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        train(cfg, show_progress=False, on_step=crash)
    assert not (REPO / cfg.runs_dir / cfg.run / "pretrain").exists()
    metrics = train(cfg, resume=True, show_progress=False)

    log, ref = read_log(cfg), read_log(ref_cfg)
    assert log["step"].tolist() == list(range(1, cfg.max_steps + 1))  # no restart, no repeats
    resumed = log["step"] > cfg.save_every
    # the learning rate after the checkpoint is the uninterrupted run's, not a new warm-up
    np.testing.assert_allclose(log.loc[resumed, "lr"], ref.loc[resumed, "lr"], rtol=1e-9)
    assert log.loc[resumed, "lr"].iloc[0] < log["lr"].max()
    np.testing.assert_allclose(log.loc[resumed, "loss"], ref.loc[resumed, "loss"], rtol=1e-4)
    assert metrics["heldout_mlm_loss_before"] == ref_metrics["heldout_mlm_loss_before"]
    assert metrics["heldout_mlm_loss_after"] == pytest.approx(ref_metrics["heldout_mlm_loss_after"],
                                                              rel=1e-4)


def test_resume_without_checkpoint_or_with_another_config_fails_clearly(reference, tmp_path):
    cfg = tiny_config(tmp_path, run="never_ran")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(cfg, resume=True)
    ref_cfg, _ = reference
    changed = dataclasses.replace(ref_cfg, run="resumed", learning_rate=0.5)
    with pytest.raises(ValueError, match="learning_rate"):
        train(changed, resume=True)


def test_unknown_backbone_path_gives_a_clear_error(tmp_path, capsys):
    cfg = tiny_config(tmp_path, backbone=str(tmp_path / "no_such_checkpoint"))
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint.*config.json"):
        train(cfg)
    assert not list(tmp_path.iterdir())  # failed before writing anything
    code = main(["--config", str(TINY), "--model-path", str(tmp_path / "no_such_checkpoint"),
                 "--set", f"runs_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: backbone:") and "\n" not in err


def test_empty_corpus_gives_a_clear_error(tmp_path, capsys):
    products, _ = read_products(SAMPLE_DIR)
    run_dir = tmp_path / "empty_run"
    run_dir.mkdir()
    products.head(0).to_parquet(run_dir / "products.parquet")
    with pytest.raises(EmptyCorpusError, match="products.parquet has no products"):
        load_corpus(tiny_config(tmp_path, data_dir=str(run_dir)))
    untitled = products.head(20).assign(product_title="  ")
    with pytest.raises(EmptyCorpusError, match="non-empty 'product_title'"):
        build_corpus(untitled, tiny_config(tmp_path), "untitled")
    code = main(["--config", str(TINY), "--data-dir", str(run_dir), "--set", f"runs_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no products" in err and "\n" not in err


def test_config_values_are_coerced_or_rejected_in_one_line():
    cfg = load_config(TINY, ["learning_rate=3e-3", "max_steps=12.0"], cls=PretrainConfig)
    assert cfg.learning_rate == "3e-3"  # YAML 1.1 reads an exponent without a dot as text
    fixed = checked(cfg)
    assert fixed.learning_rate == 0.003 and fixed.max_steps == 12
    with pytest.raises(ValueError, match="batch_size must be int, got 'many'"):
        checked(load_config(TINY, ["batch_size=many"], cls=PretrainConfig))
