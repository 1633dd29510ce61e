"""Training cost of each fine-tuning trick, side by side in one run.

    python -m benchmarks.trick_overhead [--backbone minilm] [--max-length 32] [--train-steps 12]
                                        [--batch-size 16] [--repeats 2] [--threads 1]

Each variant runs the loop's own step (``finetune.train._training_step``: mixup draw, forward(s),
backward, FGM pass, clipping) plus the optimizer step and the EMA update, on the same batches of
the bundled real sample from the same initial weights. Variants run interleaved (baseline, +EMA,
+FGM, +R-Drop, +mixup, full, baseline, ...) so machine load hits all of them; the table gives the
median training pairs per CPU-second and its ratio to the baseline, next to the ratio expected from
counting passes. Writes ``benchmarks/results/trick_overhead.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from benchmarks.train_throughput import spread_batches
from data.esci_io import load_esci
from data.folds import make_folds
from esci.artifacts import write_text
from esci.config import DataConfig
from finetune.backbone import build_encoder
from finetune.batches import PairCollator
from finetune.config import FinetuneConfig
from finetune.kfold import prepare_inputs
from finetune.losses import TaskLoss
from finetune.model import CrossEncoder
from finetune.train import _optimizer, _training_step
from finetune.tricks.ema import make_ema
from finetune.tricks.rdrop import RDropLoss

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"baseline": {}, "+EMA": dict(ema=True), "+FGM": dict(fgm=True), "+R-Drop": dict(rdrop=True),
            "+mixup": dict(mixup=True), "full": dict(ema=True, fgm=True, rdrop=True, mixup=True)}
# Forward+backward passes of the encoder per step, in units of the baseline's one. A backward costs
# about two forwards, so a pass is ~3F. FGM: one more forward and backward (+3F). R-Drop as the issue
# counts it: one more forward (+1F); as implemented here the loss depends on both dropout passes,
# so the backward runs through both as well (+3F). mixup and EMA add no encoder pass.
PASSES = {"baseline": (1, 1), "+EMA": (1, 1), "+FGM": (2, 2), "+R-Drop": (4 / 3, 2), "+mixup": (1, 1),
          "full": (2 + 1 / 3, 3)}


def run_variant(name, model, state, cfg, batches, collator, accelerator) -> tuple[float, float]:
    """(pairs per CPU-second of the whole step, CPU seconds outside the passes: optimizer + EMA)."""
    model.load_state_dict(state)
    torch.manual_seed(0)
    optimizer = _optimizer(model, cfg)
    ema = make_ema(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema else None
    loss_fn = TaskLoss({"task1": 1.0, "task2": 1.0, "task3": 1.0}, cfg.poly1_epsilon, cfg.label_smoothing)
    rdrop_loss = RDropLoss(loss_fn, cfg.rdrop_alpha) if cfg.rdrop else None
    model.train()
    n_pairs, total, outside = 0, 0.0, 0.0
    for rows in batches:
        batch = collator(rows)
        start = time.process_time()
        _training_step(model, batch, cfg, loss_fn, rdrop_loss, accelerator)
        middle = time.process_time()
        optimizer.step()
        optimizer.zero_grad()
        if ema is not None:
            ema.update_parameters(model)
        end = time.process_time()
        total += end - start
        outside += end - middle
        n_pairs += len(rows)
    return n_pairs / total, outside / total


def expected_ratio(name: str, outside_share: float, scenario: int) -> float:
    """Baseline step = outside + passes; a variant multiplies the passes part."""
    return 1.0 / (outside_share + (1 - outside_share) * PASSES[name][scenario])


def to_markdown(results: dict, outside: float, args) -> str:
    base = statistics.median(results["baseline"])
    lines = ["| variant | train pairs/CPU-s | ratio to baseline (measured) | expected ratio, issue's count "
             "| expected ratio, this implementation | repeats (pairs/CPU-s) |", "|---|---|---|---|---|---|"]
    for name, values in results.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.1f} | {med / base:.2f} | {expected_ratio(name, outside, 0):.2f} | "
                     f"{expected_ratio(name, outside, 1):.2f} | {', '.join(f'{v:.1f}' for v in values)} |")
    return ("\n".join(lines) + "\n\n"
            f"Backbone {args.backbone}, max_length {args.max_length}, batch {args.batch_size}, "
            f"{args.train_steps} training steps per timed run (spread over an epoch's length-grouped "
            f"order, the same batches for every variant), median of {args.repeats} interleaved repeats, "
            f"torch threads {torch.get_num_threads()}, real sample pairs, CPU time of this process.\n\n"
            "Expected ratios count encoder passes with backward = 2 forwards (a forward+backward = 3F): "
            "FGM adds one forward and one backward (cost x2); R-Drop adds one forward as the issue counts "
            "it (x4/3), but here the loss of both dropout passes is backpropagated, so it adds a backward "
            "too (x2); full = FGM + R-Drop (x7/3 or x3); EMA and mixup add no pass (x1). The optimizer "
            f"step and EMA update do not scale with passes: they were {100 * outside:.0f}% of the "
            "baseline step's CPU time (measured here), and the expected ratios keep that part fixed.\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Training cost of EMA, FGM, R-Drop, mixup and all of them.")
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--data-dir", default=str(REPO / "data" / "esci_sample"))
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "trick_overhead.md"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_esci(args.data_dir)
    base_cfg = FinetuneConfig(backbone=args.backbone, max_length=args.max_length, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare_inputs(base_cfg, DataConfig(), Path(tmp), data.examples, data.products,
                              make_folds(data.examples, 3, 42))
    rows = np.flatnonzero(prep.labels >= 0)
    batches = spread_batches(rows, prep.pairs, args.batch_size, args.train_steps, grouped=True)
    collator = PairCollator(prep.pairs, prep.backbone.pad_id, prep.labels)
    torch.manual_seed(0)
    model = CrossEncoder(build_encoder(prep.backbone, base_cfg, 0), base_cfg, ["task1", "task2", "task3"],
                         prep.pairs.id_sizes, prep.tables)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    accelerator = Accelerator()
    results = {name: [] for name in VARIANTS}
    outside = []
    for _ in range(args.repeats):
        for name, flags in VARIANTS.items():
            cfg = dataclasses.replace(base_cfg, **flags)
            rate, share = run_variant(name, model, state, cfg, batches, collator, accelerator)
            results[name].append(rate)
            if name == "baseline":
                outside.append(share)
    table = to_markdown(results, statistics.median(outside), args)
    write_text(table, args.out)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
