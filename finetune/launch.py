"""The fine-tuning stage on its own, for ``accelerate launch`` (several processes, GPUs or nodes).

    accelerate launch [--num_processes N ...] -m finetune.launch --run <run> [--config preset.yaml]
                      [--set finetune.key=value ...]

Every process runs this module: each trains on its share of every batch (DDP), scores its share
of the validation and prediction rows, and receives everyone's predictions back; only the main
process writes files. The run's prepare stage must exist (``python -m esci.pipeline`` writes it),
so the processes read the same examples, products and folds. Without ``accelerate launch`` it is
the stage in one process.
"""
from __future__ import annotations

import argparse
import os
import sys

from esci.artifacts import RunPaths
from esci.config import load_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the fine-tuning stage (under accelerate launch).")
    ap.add_argument("--run", required=True, help="run name: reads and writes runs/<run>/")
    ap.add_argument("--config", default="configs/default.yaml", help="YAML preset")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override such as finetune.batch_size=32 (repeatable)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, [*args.overrides, f"run={args.run}", "finetune.enabled=true"])
    paths = RunPaths(cfg.runs_dir, cfg.run)
    missing = [p for p in (paths.examples, paths.folds, paths.root / "products.parquet") if not p.is_file()]
    if missing:
        print(f"error: {missing[0]} is missing: run the pipeline's prepare stage for run {cfg.run!r} first",
              file=sys.stderr)
        return 2
    from finetune import stage  # after the config check: importing torch and transformers takes seconds
    from finetune.train import process_state
    state, launched = process_state(), int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        # `accelerate launch --multi_gpu` on a machine without GPUs starts N processes that each
        # believe they are alone: each would train on everything and write the same files.
        print(f"error: {launched} processes were launched but Accelerate sees {state.num_processes}; "
              "without GPUs set ACCELERATE_USE_CPU=1 (gloo backend)", file=sys.stderr)
        return 2
    outputs = stage.run(cfg, paths)
    if state.is_main_process:
        print(f"[finetune] {state.num_processes} process(es) wrote " + ", ".join(str(p) for p in outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
