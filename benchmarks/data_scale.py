"""Full-dataset data layer on SYNTHETIC data: load + validate + folds + product text.

The official dataset has 2.6M judged pairs and 130k queries. This benchmark writes synthetic
official-layout directories at several fractions of that size, then runs the data stage on each
in a fresh process under GNU ``time -v`` and records wall time and peak memory, so growth with
size can be read off one table measured in one run.

    python -m benchmarks.data_scale [--fractions 0.05 0.25 1.0]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from data.synthetic import write_synthetic
from esci.artifacts import write_text

FULL_QUERIES = 130_000
PRODUCTS_PER_QUERY = 20.0
CHILD = """
import sys, time
from data.esci_io import load_esci
from data.folds import make_folds
from data.product_text import render_products
t = time.perf_counter(); d = load_esci(sys.argv[1]); t_load = time.perf_counter() - t
t = time.perf_counter(); f = make_folds(d.examples); t_folds = time.perf_counter() - t
t = time.perf_counter(); text = render_products(d.products, locale_marker=True); t_text = time.perf_counter() - t
print(f"RESULT {len(d.examples)} {len(d.products)} {t_load:.2f} {t_folds:.2f} {t_text:.2f} {text.str.len().mean():.0f}")
"""


def measure(data_dir: Path) -> dict:
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CHILD, str(data_dir)],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    rows, products, t_load, t_folds, t_text, chars = proc.stdout.split("RESULT ")[1].split()
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    return {"examples": int(rows), "products": int(products), "load_validate_s": float(t_load),
            "folds_s": float(t_folds), "product_text_s": float(t_text), "wall_s": secs,
            "peak_rss_gib": rss_kb / 2 ** 20, "mean_product_chars": int(chars)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.25, 1.0])
    ap.add_argument("--out", default="benchmarks/results/data_scale.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for frac in args.fractions:
            t = time.perf_counter()
            data_dir = write_synthetic(Path(tmp) / f"syn_{frac}", int(FULL_QUERIES * frac),
                                       PRODUCTS_PER_QUERY, seed=0)
            gen_s = time.perf_counter() - t
            rows.append({"fraction_of_full": frac, "generate_s": round(gen_s, 1), **measure(data_dir)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["rss_bytes_per_example"] = (table["peak_rss_gib"] * 2 ** 30 / table["examples"]).round(0)
    text = ("# Data layer at scale (SYNTHETIC data)\n\n"
            "Command: `python -m benchmarks.data_scale`. One process per size under GNU `time -v`; "
            "all sizes measured in the same run. Synthetic products are not shared between queries, "
            "so there are as many products as examples (the real data has 1.8M for 2.6M).\n\n"
            + table.round(2).to_markdown(index=False) + "\n")
    write_text(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
