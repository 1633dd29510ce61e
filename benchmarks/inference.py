"""CPU inference speed of a fine-tuned fold cross-encoder: plain loop, the pipeline's PyTorch path,
ONNX Runtime fp32 and int8; and how well the ONNX models agree with PyTorch.

    python -m benchmarks.inference [--backbone minilm] [--max-length 128] [--batch-size 32]
                                   [--n-pairs 256] [--repeats 3] [--threads 1]

One fold model (fold 0 of a 5-fold query-grouped split, one epoch over ``--train-pairs`` of its
training rows) is trained on the bundled real sample and kept under ``runs/<--run>/`` (a rerun
reuses it). Timed paths, same model, same
pairs, same batch size, run interleaved (a, b, c, d, a, b, ...) so machine load hits all alike:
* (a) plain: pairs in file order, every batch padded to ``max_length``, ``torch.no_grad``;
* (b) pipeline: ``finetune.predict.predict_outputs`` (length-sorted, dynamic padding, inference_mode);
* (c) ONNX Runtime fp32 and (d) int8 (dynamic quantisation), on the batches of (b).
Achieved GFLOP/s counts the encoder's and head's multiply-adds on the padded batch shapes each path
computes; the peak is the best of a few ``torch.matmul`` of two n x n fp32 matrices, same threads.
Agreement: on the fold model's out-of-fold rows, max |p_onnx - p_torch| over all heads, and the task
metrics of the int8 model against PyTorch. Writes ``benchmarks/results/inference.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from esci.artifacts import RunPaths, write_text
from esci.config import fingerprint, load_config
from esci.pipeline import prepare
from finetune.backbone import build_encoder
from finetune.batches import PairCollator, inference_batches
from finetune.kfold import _reset_if_changed, fold_rows, prepare_inputs
from finetune.model import CrossEncoder
from finetune.onnx_export import export_onnx, quantize_int8
from finetune.onnx_runtime import ort_outputs, session
from finetune.predict import predict_outputs, valid_metrics
from finetune.train import FoldData, train_and_predict

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "inference.md"


def train_fold_model(args) -> tuple:
    """(model, prep, fold-0 OOF rows, cfg): trained once, reused by later runs with the same settings."""
    overrides = [f"runs_dir={args.runs_dir}", f"run={args.run}", f"data.data_dir={REPO / 'data' / 'esci_sample'}",
                 f"finetune.backbone={args.backbone}", f"finetune.max_length={args.max_length}",
                 f"finetune.batch_size={args.train_batch_size}", "finetune.keep_fold_models=true",
                 "finetune.checkpoint_every=0", f"finetune.num_threads={args.threads}",
                 f"finetune.infer_batch_size={args.batch_size}", "finetune.learning_rate=0.0001"]
    cfg = load_config(REPO / "configs" / "tiny.yaml", overrides + ["cv.n_folds=5"])
    paths = RunPaths(cfg.runs_dir, cfg.run)
    if not paths.folds.is_file():
        prepare(cfg, paths)
    fcfg = cfg.finetune
    prep = prepare_inputs(fcfg, cfg.data, paths.root, pd.read_parquet(paths.examples),
                          pd.read_parquet(paths.root / "products.parquet"), pd.read_parquet(paths.folds))
    out_dir = paths.root / "finetune" / fcfg.model_name / "folds"
    _reset_if_changed(out_dir, fingerprint(dataclasses.asdict(fcfg), prep.backbone.key))
    train, valid, predict = fold_rows(prep, 0, fcfg, np.zeros(len(prep.frame), bool))
    # A short run: speed and ONNX agreement need trained weights, not a good model.
    train = np.sort(np.random.default_rng(fcfg.seed).permutation(train)[:args.train_pairs])
    data = FoldData(prep.pairs, prep.labels, prep.frame["query_id"].to_numpy(), train, valid, predict,
                    prep.backbone.pad_id, None, fcfg.seed)

    def build():
        return CrossEncoder(build_encoder(prep.backbone, fcfg, fcfg.seed), fcfg, list(fcfg.tasks),
                            prep.pairs.id_sizes, prep.tables)
    fold_dir = out_dir / "multitask" / "fold0"
    train_and_predict(build, data, fcfg, fold_dir, desc="train fold 0")
    model = build()
    model.load_state_dict(torch.load(next(fold_dir.glob("best-step*.pt")), weights_only=True))
    steps = __import__("json").loads((fold_dir / "progress.json").read_text())["total_steps"]
    oof_rows = np.flatnonzero(prep.frame["fold"].to_numpy() == 0)
    return model.eval(), prep, oof_rows, fcfg, steps, len(train), paths


def batch_flops(enc_cfg, head_flops_per_pair: float, batch: int, seq: int) -> float:
    """Multiply-adds x 2 of one forward pass of a BERT-style encoder (+ pooler and head) on (batch, seq)."""
    h, ffn, layers = enc_cfg.hidden_size, enc_cfg.intermediate_size, enc_cfg.num_hidden_layers
    per_layer = 2 * batch * seq * (4 * h * h + 2 * h * ffn) + 2 * 2 * batch * seq * seq * h
    return layers * per_layer + 2 * batch * h * h + batch * head_flops_per_pair


def head_flops(model: CrossEncoder) -> float:
    return 2 * sum(m.in_features * m.out_features for m in model.modules()
                   if isinstance(m, torch.nn.Linear) and not any(m is x for x in model.encoder.modules()))


def matmul_peak(n: int, reps: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--train-pairs", type=int, default=480, help="training rows of fold 0 used (one epoch)")
    ap.add_argument("--train-batch-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32, help="inference batch size of every path")
    ap.add_argument("--n-pairs", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--runs-dir", default=str(REPO / "runs"))
    ap.add_argument("--run", default="bench_inference")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, prep, oof_rows, fcfg, steps, n_train, paths = train_fold_model(args)
    torch.set_num_threads(args.threads)
    pairs, pad, bs = prep.pairs, prep.backbone.pad_id, args.batch_size
    onnx_dir = paths.root / "onnx"
    example = PairCollator(pairs, pad)(oof_rows[:2])
    fp32 = export_onnx(model, example, onnx_dir / "fold0.onnx")
    int8 = quantize_int8(fp32, onnx_dir / "fold0.int8.onnx")
    s32, s8 = session(fp32, args.threads), session(int8, args.threads)

    labelled = np.flatnonzero(prep.labels >= 0)
    rows = np.random.default_rng(0).permutation(labelled)[:args.n_pairs]
    plain_collate = PairCollator(pairs, pad, pad_to=fcfg.max_length)

    @torch.no_grad()
    def plain(r):
        for i in range(0, len(r), bs):
            for z in model(plain_collate(r[i:i + bs])).values():
                torch.softmax(z, -1) if z.shape[-1] > 1 else torch.sigmoid(z)

    paths_run = {
        "(a) plain loop, pad to max_length": plain,
        "(b) pipeline PyTorch (sorted, dynamic padding, inference_mode)": lambda r: predict_outputs(model, pairs, r, pad, bs),
        "(c) ONNX Runtime fp32": lambda r: ort_outputs(s32, pairs, r, pad, bs),
        "(d) ONNX Runtime int8 (dynamic quantisation)": lambda r: ort_outputs(s8, pairs, r, pad, bs),
    }
    for fn in paths_run.values():  # warm-up: allocator, ORT kernels, first-call overheads
        fn(rows[:bs])
    times = {name: [] for name in paths_run}
    for _ in range(args.repeats):
        for name, fn in paths_run.items():
            times[name].append(_timed(lambda: fn(rows)))
    peak = matmul_peak(args.matmul_n, 3)

    enc_cfg, hf = model.encoder.config, head_flops(model)
    sorted_batches = inference_batches(rows, pairs, bs, True)
    lens = pairs.lengths()
    flops_padded = sum(batch_flops(enc_cfg, hf, min(bs, len(rows) - i), fcfg.max_length)
                       for i in range(0, len(rows), bs))
    flops_dynamic = sum(batch_flops(enc_cfg, hf, len(b), int(lens[b].max())) for b in sorted_batches)
    tokens = {"plain": fcfg.max_length, "dyn": sum(len(b) * int(lens[b].max()) for b in sorted_batches) / len(rows)}

    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["(a) plain loop, pad to max_length"]
    table = ["| path | pairs/s | ratio to (a) | tokens computed / pair | achieved GFLOP/s |", "|---|---|---|---|---|"]
    gflops = {}
    for name, t in median.items():
        flops = flops_padded if name.startswith("(a)") else flops_dynamic
        gflops[name] = flops / t / 1e9
        tok = tokens["plain"] if name.startswith("(a)") else tokens["dyn"]
        table.append(f"| {name} | {len(rows) / t:.1f} | {base / t:.2f}x | {tok:.1f} | {gflops[name]:.1f} |")
    best = min(median, key=median.get)
    best_fp32 = max((n for n in gflops if "int8" not in n), key=gflops.get)

    # Agreement on the fold model's out-of-fold rows
    ref = predict_outputs(model, pairs, oof_rows, pad, bs)
    got32 = ort_outputs(s32, pairs, oof_rows, pad, bs)
    got8 = ort_outputs(s8, pairs, oof_rows, pad, bs)
    diff32 = max(float(np.abs(got32[t] - ref[t]).max()) for t in ref)
    diff8 = max(float(np.abs(got8[t] - ref[t]).max()) for t in ref)
    qids = prep.frame["query_id"].to_numpy()[oof_rows]
    metrics = {name: valid_metrics(out, prep.labels[oof_rows], qids)
               for name, out in (("PyTorch", ref), ("ORT fp32", got32), ("ORT int8", got8))}
    gains = pd.Series(prep.labels[oof_rows]).map({0: 1.0, 1: 0.1, 2: 0.01, 3: 0.0})
    n_informative = int((gains.groupby(qids).nunique() > 1).sum())
    keys = [("task2_micro_f1", "task 2 micro-F1"), ("task1_ndcg", "task 1 nDCG"),
            ("task1_ndcg_informative", f"task 1 nDCG ({n_informative} queries with >1 distinct gain)"),
            ("task3_micro_f1", "task 3 micro-F1")]
    agree = ["| metric | PyTorch | ORT fp32 | ORT int8 | int8 - PyTorch |", "|---|---|---|---|---|"]
    for key, label in keys:
        m = [metrics[n][key] for n in ("PyTorch", "ORT fp32", "ORT int8")]
        agree.append(f"| {label} | {m[0]:.4f} | {m[1]:.4f} | {m[2]:.4f} | {m[2] - m[0]:+.4f} |")

    import onnxruntime
    enc = f"{args.backbone} ({enc_cfg.num_hidden_layers} layers, hidden {enc_cfg.hidden_size})"
    text = "\n".join([
        "# CPU inference: plain loop vs pipeline PyTorch vs ONNX Runtime",
        "",
        f"`python -m benchmarks.inference --backbone {args.backbone} --max-length {args.max_length} "
        f"--train-pairs {args.train_pairs} --train-batch-size {args.train_batch_size} --batch-size {bs} --n-pairs {args.n_pairs} --repeats {args.repeats} --threads {args.threads}`",
        "",
        f"Model: one fold cross-encoder, backbone {enc}, max_length {fcfg.max_length}, trained quickly for this "
        f"benchmark only (fold 0 of {len(set(prep.frame['fold'])) - 1}, {n_train} of its training pairs, one epoch = "
        f"{steps} steps of {fcfg.batch_size}; enough for speed and agreement, not a quality result). "
        f"{len(rows)} real sample pairs per timed path, batch size {bs}, {args.threads} thread(s) everywhere, "
        f"median of {args.repeats} interleaved repeats. CPU: {cpu_name()}; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}. Shared machine: absolute numbers move with its load, "
        "the ratios are the measurement.",
        "",
        *table,
        "",
        f"Matmul peak (best of 3 `torch.matmul` {args.matmul_n}x{args.matmul_n} fp32, same thread count): "
        f"{peak:.1f} GFLOP/s. Fastest path {best.split(' ')[0]}: {gflops[best]:.1f} GFLOP/s = "
        f"{gflops[best] / peak:.2f} of the peak"
        + (" (int8 multiply-adds counted like fp32 ones against the fp32 peak, so not a physical bound); "
           f"fastest fp32 path {best_fp32.split(' ')[0]}: {gflops[best_fp32]:.1f} GFLOP/s = "
           f"{gflops[best_fp32] / peak:.2f} of the peak." if "int8" in best else "."),
        "",
        f"Agreement on the fold model's {len(oof_rows)} out-of-fold rows: max |p_ORT fp32 - p_PyTorch| over all "
        f"heads = {diff32:.2e} ({'within' if diff32 <= 1e-4 else 'OUTSIDE'} the 1e-4 bound); "
        f"int8: max |p_int8 - p_PyTorch| = {diff8:.2e}.",
        "",
        *agree,
        "",
    ])
    write_text(text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
