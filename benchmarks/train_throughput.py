"""Training and inference throughput of the fine-tuning batches against a plain loop.

    python -m benchmarks.train_throughput [--backbone minilm] [--max-lengths 64,256]
                                          [--train-steps 12] [--infer-rows 256] [--repeats 2] [--threads 1]

Same model, same data (the bundled real sample's pairs), same step code; only the batching differs:
* plain: random batches, every one padded to ``max_length``;
* ours: length-grouped batches (``LengthGroupedSampler``) with dynamic padding for training,
  length-sorted batches for inference.
The two run interleaved (plain, ours, plain, ours, ...) in one process, so machine load hits both;
the table gives the median pairs/s of the repeats and their ratio. It also times tokenising the
pairs against loading the per-run token cache. Writes ``benchmarks/results/train_throughput.md``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data.esci_io import load_esci
from data.folds import make_folds
from esci.artifacts import write_text
from esci.config import DataConfig
from finetune.backbone import build_encoder
from finetune.batches import PairCollator, inference_batches, train_loader
from finetune.config import FinetuneConfig
from finetune.kfold import prepare_inputs
from finetune.losses import TaskLoss
from finetune.model import CrossEncoder
from finetune.predict import predict_outputs
from finetune.train import _optimizer

REPO = Path(__file__).resolve().parents[1]


def spread_batches(rows, pairs, batch_size, steps, grouped) -> list[np.ndarray]:
    """``steps`` batches spread evenly over one epoch's order: the length-grouped order starts
    with its longest batches, so its first few steps alone would not be representative."""
    order = list(train_loader(rows, pairs, None, batch_size, seed=0, epoch=0, length_grouped=grouped).batch_sampler)
    picks = np.linspace(0, len(order) - 1, steps).round().astype(int)
    return [rows[order[i]] for i in picks]


def _rates(n_pairs: int, wall: float, cpu: float) -> tuple[float, float]:
    return n_pairs / wall, n_pairs / cpu


def time_training(model, optimizer, batches, collator) -> tuple[float, float, float]:
    """(pairs/s wall, pairs per CPU-second, padded tokens per pair) over the given batches."""
    loss_fn = TaskLoss({})
    model.train()
    n_pairs = n_tokens = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for rows in batches:
        batch = collator(rows)
        loss = loss_fn(model(batch), batch["targets"], batch["weight"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        n_pairs += batch["input_ids"].shape[0]
        n_tokens += batch["input_ids"].numel()
    return (*_rates(n_pairs, time.perf_counter() - wall, time.process_time() - cpu), n_tokens / n_pairs)


def time_inference(model, pairs, rows, pad_id, batch_size, max_length, sorted_dynamic) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    if sorted_dynamic:
        predict_outputs(model, pairs, rows, pad_id, batch_size)
    else:  # the plain loop: file order, every batch padded to max_length
        collate = PairCollator(pairs, pad_id, pad_to=max_length)
        model.eval()
        with torch.no_grad():
            for batch_rows in inference_batches(rows, pairs, batch_size, length_sorted=False):
                model(collate(batch_rows))
    return _rates(len(rows), time.perf_counter() - wall, time.process_time() - cpu)


def bench_length(args, max_length: int, frames, runs_root: Path) -> list[dict]:
    cfg = FinetuneConfig(backbone=args.backbone, max_length=max_length, batch_size=args.batch_size)
    examples, products, folds = frames
    start = time.perf_counter()
    prep = prepare_inputs(cfg, DataConfig(), runs_root, examples, products, folds)
    first = time.perf_counter() - start
    start = time.perf_counter()
    prep = prepare_inputs(cfg, DataConfig(), runs_root, examples, products, folds)
    cached = time.perf_counter() - start
    rows = np.flatnonzero(prep.labels >= 0)
    infer_rows = np.random.default_rng(0).choice(rows, size=min(args.infer_rows, len(rows)), replace=False)
    torch.manual_seed(0)
    model = CrossEncoder(build_encoder(prep.backbone, cfg, 0), cfg, ["task1", "task2", "task3"],
                         prep.pairs.id_sizes, prep.tables)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results = {name: {"train": [], "train_cpu": [], "infer": [], "infer_cpu": [], "tokens": 0.0}
               for name in ("plain", "ours")}
    for _ in range(args.repeats):
        for name in ("plain", "ours"):
            model.load_state_dict(state)  # every timed run starts from the same weights
            optimizer = _optimizer(model, cfg)
            collator = PairCollator(prep.pairs, prep.backbone.pad_id, prep.labels,
                                    pad_to=None if name == "ours" else max_length)
            batches = spread_batches(rows, prep.pairs, args.batch_size, args.train_steps, grouped=name == "ours")
            r = results[name]
            wall, cpu, r["tokens"] = time_training(model, optimizer, batches, collator)
            r["train"].append(wall)
            r["train_cpu"].append(cpu)
            wall, cpu = time_inference(model, prep.pairs, infer_rows, prep.backbone.pad_id,
                                       args.infer_batch_size, max_length, name == "ours")
            r["infer"].append(wall)
            r["infer_cpu"].append(cpu)
    out = []
    for name in ("plain", "ours"):
        r = results[name]
        out.append({"max_length": max_length, "loop": name, "tokens_per_pair": r["tokens"],
                    **{k: statistics.median(r[k]) for k in ("train", "train_cpu", "infer", "infer_cpu")},
                    "tokenise_s": first, "cache_load_s": cached,
                    "mean_pair_tokens": float(prep.pairs.lengths()[rows].mean())})
    return out


def to_markdown(rows: list[dict], args) -> str:
    lines = ["| max_length | mean pair tokens | loop | padded tokens / pair | train pairs/s | train pairs/CPU-s "
             "| infer pairs/s | infer pairs/CPU-s | train ratio (CPU) | infer ratio (CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by_len = {}
    for r in rows:
        by_len.setdefault(r["max_length"], {})[r["loop"]] = r
    for length, pair in by_len.items():
        plain = pair["plain"]
        for name in ("plain", "ours"):
            r = pair[name]
            lines.append(f"| {length} | {r['mean_pair_tokens']:.1f} | {name} | {r['tokens_per_pair']:.1f} | "
                         f"{r['train']:.1f} | {r['train_cpu']:.1f} | {r['infer']:.1f} | {r['infer_cpu']:.1f} | "
                         f"{r['train_cpu'] / plain['train_cpu']:.2f}x | {r['infer_cpu'] / plain['infer_cpu']:.2f}x |")
    cache = [f"max_length {length}: tokenise + units {pair['ours']['tokenise_s']:.1f} s, cached load "
             f"{pair['ours']['cache_load_s']:.1f} s" for length, pair in by_len.items()]
    return ("\n".join(lines) + "\n\n"
            f"Backbone {args.backbone}, batch {args.batch_size} (inference {args.infer_batch_size}), "
            f"{args.train_steps} training steps spread over an epoch's batch order and {args.infer_rows} "
            f"inference rows per timed run, median of {args.repeats} interleaved repeats, torch threads "
            f"{torch.get_num_threads()}, real sample pairs. plain = random batches padded to max_length; "
            "ours = length-grouped/sorted batches, dynamic padding. Ratios (ours / plain) use the "
            "pairs per CPU-second of this single-threaded process, which machine load does not distort "
            "the way it does wall time (the wall-clock columns are shown as measured).\n\n"
            "Per-run input preparation (text rendering, tokenisation, unit hashing) vs loading its cache "
            "(wall): " + "; ".join(cache) + ".\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fine-tuning throughput: length-grouped dynamic padding vs plain.")
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--data-dir", default=str(REPO / "data" / "esci_sample"))
    ap.add_argument("--max-lengths", default="64,256")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--infer-batch-size", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=12)
    ap.add_argument("--infer-rows", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput.md"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_esci(args.data_dir)
    frames = (data.examples, data.products, make_folds(data.examples, 3, 42))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in (int(x) for x in args.max_lengths.split(",")):
            rows += bench_length(args, length, frames, Path(tmp))
    table = to_markdown(rows, args)
    write_text(table, args.out)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
