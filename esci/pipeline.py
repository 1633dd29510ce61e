"""End-to-end runner: data -> folds -> models -> leaderboard -> submissions.

    python -m esci.pipeline [--data-dir DIR] [--config configs/default.yaml] [--run NAME]
                            [--set section.key=value ...] [--force]

Each stage reads and writes documented files under ``runs/<run>/``. A rerun skips a stage whose
outputs exist and whose fingerprint (its config sections, upstream fingerprints, input files) is
unchanged. Bad input data stops the run with a one-line error before anything is written.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from esci.artifacts import RunPaths, write_parquet, write_text
from esci.config import PipelineConfig, fingerprint, load_config, to_yaml
from esci.stages import is_fresh, mark_done, stamp_fingerprint


@dataclass(frozen=True)
class Stage:
    name: str
    target: str  # "module:function" taking (cfg, paths) and returning its output paths
    sections: tuple[str, ...]  # config sections the stage reads
    after: tuple[str, ...] = ()  # upstream stages whose fingerprints fold into this one
    always: bool = False  # cheap summary stages rerun every time


STAGES = [
    Stage("prepare", "esci.pipeline:prepare", ("data", "cv")),
    Stage("baseline", "baseline.stage:run", ("baseline",), ("prepare",)),
    Stage("finetune", "finetune.stage:run", ("data", "finetune"), ("prepare",)),
    Stage("query_understanding", "query_understanding.stage:run", ("query_understanding",), ("prepare",)),
    Stage("ensemble", "ensemble.stage:run", ("ensemble",), ("baseline", "finetune", "query_understanding")),
    Stage("leaderboard", "esci.pipeline:leaderboard", ("leaderboard",), always=True),
    Stage("submission", "esci.pipeline:submission", (), ("leaderboard",), always=True),
    Stage("figures", "esci.figures:run", ("figures",), always=True),
]


def _data_files(data_dir: Path) -> list[tuple[str, int, int]]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                  for p in data_dir.glob("shopping_queries_dataset_*") if p.is_file())


def prepare(cfg: PipelineConfig, paths: RunPaths) -> list[Path]:
    from data.esci_io import load_esci
    from data.folds import make_folds
    data = load_esci(cfg.data.data_dir, cfg.data.subset)  # raises before anything is written
    folds = make_folds(data.examples, cfg.cv.n_folds, cfg.cv.seed)
    write_parquet(data.examples, paths.examples)
    write_parquet(data.products, paths.root / "products.parquet")
    write_parquet(folds, paths.folds)
    return [paths.examples, paths.root / "products.parquet", paths.folds]


def leaderboard(cfg: PipelineConfig, paths: RunPaths) -> list[Path]:
    from esci.leaderboard import build_leaderboard
    build_leaderboard(paths, cfg.leaderboard.bootstrap, cfg.leaderboard.seed)
    print(paths.leaderboard_md.read_text())
    return [paths.leaderboard_csv, paths.leaderboard_md]


def submission(cfg: PipelineConfig, paths: RunPaths) -> list[Path]:
    import pandas as pd
    from esci.submission import write_submissions
    record = write_submissions(paths, pd.read_csv(paths.leaderboard_csv))
    print(f"submissions from {record['models']} -> {paths.submission_dir}")
    return [paths.submission_dir / f"task{t}.csv" for t in (1, 2, 3)]


def _call(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _enabled(cfg: PipelineConfig, stage: Stage) -> bool:
    return all(getattr(getattr(cfg, s), "enabled", True) for s in stage.sections)


def run_pipeline(cfg: PipelineConfig, force: bool = False) -> RunPaths:
    paths = RunPaths(cfg.runs_dir, cfg.run)
    data_dir = Path(cfg.data.data_dir)
    for stage in STAGES:
        if not _enabled(cfg, stage):
            print(f"[{stage.name}] disabled by config")
            continue
        fp = fingerprint(*[getattr(cfg, s) for s in stage.sections],
                         *[stamp_fingerprint(paths, a) for a in stage.after],
                         _data_files(data_dir) if stage.name == "prepare" else None)
        if not force and not stage.always and is_fresh(paths, stage.name, fp):
            print(f"[{stage.name}] up to date, skipped")
        else:
            start = time.time()
            outputs = _call(stage.target)(cfg, paths)
            mark_done(paths, stage.name, fp, outputs)
            print(f"[{stage.name}] done in {time.time() - start:.1f}s")
        if stage.name == "prepare":  # the data is valid: now the run directory may be written
            write_text(to_yaml(cfg), paths.config)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the ESCI pipeline end to end.")
    ap.add_argument("--data-dir", help="directory in the official ESCI layout")
    ap.add_argument("--config", default="configs/default.yaml", help="YAML preset")
    ap.add_argument("--run", help="run name: outputs go to runs/<run>/")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override such as baseline.n_estimators=100 (repeatable)")
    ap.add_argument("--force", action="store_true", help="rerun every stage")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.run:
        overrides.append(f"run={args.run}")
    from data.esci_io import EsciDataError
    try:
        cfg = load_config(args.config, overrides)
        run_pipeline(cfg, force=args.force)
    except (EsciDataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
