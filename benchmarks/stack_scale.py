"""The ensemble stage at full-dataset size on SYNTHETIC out-of-fold files.

The official dataset has 2.6M judged pairs and 130k queries. This writes a synthetic run
directory of that size directly with numpy (examples, products, folds, a lexical-feature table
and one out-of-fold + test file per synthetic base model, named ``synthetic_*``), then runs the
ensemble stage on it in a fresh process under GNU ``time -v`` (``resource.getrusage`` where GNU
time is missing) and records wall time, peak memory and the stage's own phase times.

    nice -n 10 python -m benchmarks.stack_scale [--rows 2600000 --queries 130000 --models 2]
                                                [--set ensemble.n_estimators=100 ...]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from esci.artifacts import LABELS, PROB_COLUMNS, TEST_FOLD, RunPaths, expected_gain, write_json, \
    write_parquet, write_predictions, write_text

REPO = Path(__file__).resolve().parents[1]
LABEL_P = [0.65, 0.22, 0.03, 0.10]  # the full dataset's E/S/C/I mix, roughly
UNITS = np.array(["cm", "mm", "inch", "gb", "ml", "pack", ""])
CHILD = """
import resource, sys, time
from esci.artifacts import RunPaths
from esci.config import load_config
from ensemble.stage import run
root, overrides = sys.argv[1], sys.argv[2:]
paths = RunPaths(*root.rsplit("/", 1))
cfg = load_config(None, [f"runs_dir={paths.root.parent}", f"run={paths.root.name}",
                         "ensemble.enabled=true", *overrides])
t = time.perf_counter(); run(cfg, paths); wall = time.perf_counter() - t
print(f"RESULT {wall:.1f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
"""


def write_synthetic_run(paths: RunPaths, n_rows: int, n_queries: int, n_models: int,
                        n_folds: int = 5, test_fraction: float = 0.1, seed: int = 0) -> dict:
    """SYNTHETIC run directory: every table the ensemble stage reads, at the size asked for."""
    rng = np.random.default_rng(seed)
    query = np.sort(rng.integers(0, n_queries, n_rows))  # ~n_rows / n_queries products a query
    q_test = rng.random(n_queries) < test_fraction
    q_fold = rng.integers(0, n_folds, n_queries)
    fold = np.where(q_test[query], TEST_FOLD, q_fold[query])
    label = rng.choice(len(LABELS), n_rows, p=LABEL_P)
    ids = pd.Series(np.arange(n_rows)).astype(str)
    qids = pd.Series(query).astype(str)
    pids = "B0" + pd.Series(rng.integers(10, 99, n_rows)).astype(str) + ids.str.zfill(7)  # ASIN-like
    locale = np.array(["us", "es", "jp"])[rng.choice(3, n_queries, p=[0.7, 0.15, 0.15])][query]
    # A fifth of the queries ask for a number with a unit; titles carry one of their own.
    q_num = np.where(rng.random(n_queries) < 0.2, rng.integers(1, 100, n_queries), -1)
    q_unit = UNITS[rng.integers(0, len(UNITS), n_queries)]
    q_text = ("kw" + pd.Series(np.arange(n_queries)).astype(str)
              + np.where(q_num >= 0, " " + pd.Series(q_num).astype(str) + q_unit, ""))
    t_num = np.where(rng.random(n_rows) < 0.5, q_num[query], rng.integers(1, 100, n_rows))
    titles = "item " + pd.Series(np.abs(t_num)).astype(str) + UNITS[rng.integers(0, len(UNITS), n_rows)]

    examples = pd.DataFrame({"example_id": ids, "query_id": qids, "query": q_text.to_numpy()[query],
                             "product_id": pids, "product_locale": locale,
                             "esci_label": np.array(LABELS)[label],
                             "split": np.where(fold == TEST_FOLD, "test", "train"),
                             "query_source": "synthetic"})
    write_parquet(examples, paths.examples)
    write_parquet(pd.DataFrame({"product_id": pids, "product_locale": locale, "product_title": titles,
                                "product_description": None, "product_bullet_point": None,
                                "product_brand": "brand", "product_color": "black"}),
                  paths.root / "products.parquet")
    write_parquet(pd.DataFrame({"example_id": ids, "query_id": qids,
                                "query_norm": q_text.to_numpy()[query], "fold": fold}), paths.folds)
    lexical = {f"synthetic_lex_{i}": rng.random(n_rows, dtype=np.float32) for i in range(21)}
    write_parquet(pd.DataFrame({"example_id": ids, **lexical}), paths.features_dir / "lexical.parquet")
    del examples, lexical

    keys = pd.DataFrame({"example_id": ids, "query_id": qids, "product_id": pids,
                         "product_locale": locale})
    is_test = fold == TEST_FOLD
    for m in range(n_models):
        logits = 1.5 * np.eye(4)[label] + rng.normal(0, 1.0 + 0.3 * m, (n_rows, 4))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        pred = keys.copy()
        pred[PROB_COLUMNS] = probs
        pred["score"] = expected_gain(pred).to_numpy() + rng.normal(0, 0.05, n_rows)
        name = f"synthetic_{m}"
        write_predictions(pred[is_test].reset_index(drop=True), paths.test(name), oof=False)
        oof = pred[~is_test].assign(fold=fold[~is_test], esci_label=np.array(LABELS)[label[~is_test]])
        write_predictions(oof.reset_index(drop=True), paths.oof(name), oof=True)
        write_json({"description": "SYNTHETIC base model", "leak": False},
                   paths.oof_dir / f"{name}.meta.json")
    return {"rows": n_rows, "queries": int(len(np.unique(query))), "oof_rows": int((~is_test).sum()),
            "test_rows": int(is_test.sum()), "base_models": n_models}


def measure(paths: RunPaths, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(paths.root), *overrides]
    gnu_time = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
    if gnu_time:
        cmd = [gnu_time, "-v", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"stack_scale: child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    wall, rss_kb = proc.stdout.split("RESULT ")[1].split()[:2]
    result = {"stage_wall_s": float(wall), "peak_rss_gib": int(rss_kb) / 2 ** 20,
              "memory_from": "getrusage"}
    if gnu_time:
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
        result["peak_rss_gib"] = int(rss.group(1)) / 2 ** 20
        result["process_wall_s"] = sum(float(x) * 60 ** i
                                       for i, x in enumerate(reversed(elapsed.group(1).split(":"))))
        result["memory_from"] = "GNU time -v"
    phases = dict(re.findall(r"\[ensemble\] time (\S+) ([\d.]+)s", proc.stdout))
    result.update({f"{k}_s": float(v) for k, v in phases.items()})
    shape = re.search(r"(\d+) out-of-fold rows x (\d+) features", proc.stdout)
    result["features"] = int(shape.group(2))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_600_000)
    ap.add_argument("--queries", type=int, default=130_000)
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="ensemble config override, e.g. ensemble.n_estimators=100")
    ap.add_argument("--out", default="benchmarks/results/stack_scale.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="stack_scale_") as tmp:
        paths = RunPaths(tmp, "synthetic")
        t = time.perf_counter()
        sizes = write_synthetic_run(paths, args.rows, args.queries, args.models)
        gen_s = time.perf_counter() - t
        print(f"generated {sizes} in {gen_s:.0f}s", flush=True)
        result = {**sizes, "generate_s": round(gen_s, 1), **measure(paths, args.overrides)}
    table = pd.DataFrame([result]).T.rename(columns={0: "value"})
    command = " ".join(["python -m benchmarks.stack_scale"] + sys.argv[1:])
    text = ("# Ensemble stage at full size (SYNTHETIC out-of-fold files)\n\n"
            f"Command: `nice -n 10 {command}`. Settings: the ensemble config defaults"
            f"{' plus ' + ', '.join(args.overrides) if args.overrides else ''}. The stage runs in "
            "a fresh process; peak memory is that process's maximum resident set. Phase times are "
            "the stage's own `[ensemble] time` lines. The machine was shared with other jobs, so "
            "wall times are upper bounds.\n\n" + table.to_markdown() + "\n")
    write_text(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
