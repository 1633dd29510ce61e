"""The fine-tuned pre-training ablation: rows without a checkpoint say so instead of training."""
from __future__ import annotations

from pretrain import finetune_ablation as fa


def test_missing_checkpoint_is_reported_not_trained(tmp_path, monkeypatch):
    monkeypatch.setattr(fa.ft, "main", lambda argv: (_ for _ in ()).throw(AssertionError("trained")))
    row = fa._row(tmp_path, "base", "mlm", "MLM", 3, [])
    assert "task2_micro_f1" not in row and "no checkpoint" in row["note"]
    table = fa.to_markdown([row])
    assert table.splitlines()[2].startswith("| MLM | – |") and "no checkpoint" in table


def test_scored_row_renders_mean_and_std():
    row = {"label": "MLM", "heldout_mlm_loss": 7.5, "train_cpu_s": 300.0, "note": "",
           **{m: 0.5 for m in fa.METRICS}, **{f"{m}_std": 0.01 for m in fa.METRICS}}
    line = fa.to_markdown([row]).splitlines()[2]
    assert line.startswith("| MLM | 7.5000 | 0.5000 ± 0.0100") and line.endswith("| 300 |")
