"""Full-dataset data layer on SYNTHETIC data: load + validate + folds + product text.

The official dataset has 2.6M judged pairs, 130k queries and 1.8M products. This benchmark
writes synthetic official-layout directories at fractions of that size (products shared among
queries at the real 1.8/2.6 ratio, text stretched to the real sample's length), then runs the
data stage on each in a fresh process under GNU ``time -v``. It records wall time and resident
memory after every step, so where memory goes and how it grows with size are read off tables
measured in one run.

    python -m benchmarks.data_scale [--fractions 0.1 0.25 0.5] [--full-budget-gib 8]

The full size (fraction 1.0) runs only when the largest measured fraction, extrapolated
linearly, projects under ``--full-budget-gib``.
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

from data.synthetic import write_synthetic
from esci.artifacts import write_text

ROOT = Path(__file__).parents[1]
FULL_QUERIES = 130_000
PRODUCTS_PER_QUERY = 20.0
PRODUCTS_PER_EXAMPLE = 1.8 / 2.6  # the real set: 1.8M products among 2.6M pairs
TEXT_SCALE = 1.5  # synthetic raw text per product about the real sample's (see table)
STEPS = ("load_validate", "folds", "product_text")


def _memory_gib() -> tuple[float, float]:
    """(current, high-water) resident set of this process, from /proc."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return tuple(int(status[k].split()[0]) / 2 ** 20 for k in ("VmRSS", "VmHWM"))


def _mean_bytes(text: pd.Series) -> float:
    """Mean UTF-8 length, counted by Arrow (no Python bytes object per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    return float(pc.mean(pc.binary_length(pa.array(text.array))).as_py())


def child(data_dir: str) -> None:
    """The measured process: each step timed, memory read after it, one RESULT line."""
    from data.esci_io import load_esci
    from data.folds import make_folds
    from data.product_text import render_products

    out = {"start_rss_gib": _memory_gib()[0]}
    t = time.perf_counter()
    data = load_esci(data_dir)
    out["load_validate_s"] = time.perf_counter() - t
    out["load_validate_rss_gib"], out["load_validate_hwm_gib"] = _memory_gib()
    t = time.perf_counter()
    folds = make_folds(data.examples)
    out["folds_s"] = time.perf_counter() - t
    out["folds_rss_gib"], out["folds_hwm_gib"] = _memory_gib()
    t = time.perf_counter()
    text = render_products(data.products, locale_marker=True)
    out["product_text_s"] = time.perf_counter() - t
    out["product_text_rss_gib"], out["product_text_hwm_gib"] = _memory_gib()
    out.update(examples=len(data.examples), products=len(data.products), folds_rows=len(folds),
               mean_product_text_bytes=_mean_bytes(text),
               examples_frame_gib=data.examples.memory_usage(deep=True).sum() / 2 ** 30,
               products_frame_gib=data.products.memory_usage(deep=True).sum() / 2 ** 30,
               product_text_gib=text.memory_usage(deep=True) / 2 ** 30)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in out.items()), flush=True)


def measure(data_dir: Path) -> dict:
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "benchmarks.data_scale",
                           "--child", str(data_dir)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"data_scale child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    line = proc.stdout.split("RESULT ")[1].split("\n")[0]
    out = {k: float(v) for k, v in (kv.split("=") for kv in line.split())}
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    out["process_wall_s"] = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    out["peak_rss_gib"] = rss_kb / 2 ** 20
    return out


def real_sample_bytes() -> float:
    """Mean rendered bytes per product of the bundled real sample: the length the text imitates."""
    from data.esci_io import load_esci
    from data.product_text import render_products
    return _mean_bytes(render_products(load_esci(ROOT / "data" / "esci_sample").products,
                                       locale_marker=True))


def run_fraction(tmp: Path, frac: float) -> dict:
    t = time.perf_counter()
    data_dir = write_synthetic(tmp / f"syn_{frac}", int(FULL_QUERIES * frac), PRODUCTS_PER_QUERY, seed=0,
                               products_per_example=PRODUCTS_PER_EXAMPLE, text_scale=TEXT_SCALE)
    gen_s = time.perf_counter() - t
    disk = sum(p.stat().st_size for p in data_dir.iterdir()) / 2 ** 30
    row = {"fraction_of_full": frac, "generate_s": gen_s, "parquet_gib": disk, **measure(data_dir)}
    for p in data_dir.iterdir():
        p.unlink()
    print({k: round(v, 3) for k, v in row.items()}, flush=True)
    return row


def linear_fit(rows: list[dict]) -> tuple[float, float]:
    """Peak GiB = intercept + slope * million examples, least squares over the measured sizes."""
    x = np.array([r["examples"] for r in rows]) / 1e6
    y = np.array([r["peak_rss_gib"] for r in rows])
    slope, intercept = np.polyfit(x, y, 1) if len(rows) > 1 else (y[0] / x[0], 0.0)
    return float(slope), float(intercept)


def report(rows: list[dict], skipped_full: str, real_bytes: float, command: str) -> str:
    t = pd.DataFrame(rows)
    t["gib_per_million_examples"] = t["peak_rss_gib"] / (t["examples"] / 1e6)
    t[["examples", "products"]] = t[["examples", "products"]].astype(int).astype(str)  # no 1.3e+06
    main = t[["fraction_of_full", "examples", "products", "generate_s", "load_validate_s", "folds_s",
              "product_text_s", "process_wall_s", "peak_rss_gib", "gib_per_million_examples",
              "mean_product_text_bytes"]]
    steps = pd.DataFrame([{"fraction_of_full": r["fraction_of_full"], "step": "start (imports)",
                           "rss_after_gib": r["start_rss_gib"], "peak_so_far_gib": np.nan}
                          for r in rows] +
                         [{"fraction_of_full": r["fraction_of_full"], "step": s,
                           "rss_after_gib": r[f"{s}_rss_gib"], "peak_so_far_gib": r[f"{s}_hwm_gib"]}
                          for r in rows for s in STEPS]).sort_values("fraction_of_full", kind="stable")
    sizes = t[["fraction_of_full", "parquet_gib", "examples_frame_gib", "products_frame_gib",
               "product_text_gib"]]
    slope, intercept = linear_fit(rows)
    full_examples = 2.6
    projection = intercept + slope * full_examples
    lines = [
        "# Data layer at scale (SYNTHETIC data)",
        "",
        f"Command: `{command}`. SYNTHETIC official-layout data from `data.synthetic` "
        f"(products shared among queries at {PRODUCTS_PER_EXAMPLE:.3f} products per example, as the "
        f"real 1.8M/2.6M; `text_scale={TEXT_SCALE}`), never a quality number. Each size runs in a "
        "fresh process under GNU `time -v` (`peak_rss_gib` is its maximum resident set); all sizes "
        "in this one run. The machine was shared with other jobs, so wall times are upper bounds.",
        "",
        f"Rendered product text (`render_products(..., locale_marker=True)`): "
        f"{main['mean_product_text_bytes'].mean():.0f} UTF-8 bytes per synthetic product against "
        f"{real_bytes:.0f} for the bundled real sample, so the synthetic text is at least as long.",
        "",
        main.round(3).to_markdown(index=False),
        "",
        f"Linear fit over the measured sizes: peak GiB = {intercept:.3f} + {slope:.3f} x (million "
        f"examples); at the full 2.6M examples: {projection:.2f} GiB."
        + (f" {skipped_full}" if skipped_full else ""),
        "",
        "## Where the memory goes",
        "",
        "Resident set after each step and the high-water mark so far, from `/proc/self/status` "
        "inside the measured process.",
        "",
        steps.round(3).to_markdown(index=False),
        "",
        "In-memory sizes (pandas `memory_usage(deep=True)`) and the synthetic parquet on disk:",
        "",
        sizes.round(3).to_markdown(index=False),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    ap.add_argument("--full", action="store_true", help="then the full size, if it projects under budget")
    ap.add_argument("--full-budget-gib", type=float, default=8.0)
    ap.add_argument("--out", default="benchmarks/results/data_scale.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    command = "python -m benchmarks.data_scale " + " ".join(sys.argv[1:])
    rows, skipped = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        for frac in sorted(args.fractions):
            rows.append(run_fraction(Path(tmp), frac))
        if args.full and 1.0 not in args.fractions:
            slope, intercept = linear_fit(rows)
            projected = intercept + slope * 2.6
            if projected < args.full_budget_gib:
                rows.append(run_fraction(Path(tmp), 1.0))
            else:
                skipped = (f"Full size not run: projected {projected:.2f} GiB is over the "
                           f"{args.full_budget_gib} GiB budget.")
    text = report(rows, skipped, real_sample_bytes(), command)
    write_text(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
