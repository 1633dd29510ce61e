"""Loading a QUConfig from a preset (a pipeline preset's ``query_understanding`` section, or a flat
file of its keys) plus ``key=value`` overrides, and reading a run's input files."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import yaml

from esci.artifacts import RunPaths
from esci.config import parse_override
from query_understanding.config import BODIES, TASKS, QUConfig

SECTION = "query_understanding"


def check_config(cfg: QUConfig) -> QUConfig:
    bad = [t for t in cfg.tasks if t not in TASKS]
    if bad or not cfg.tasks:
        raise ValueError(f"config {SECTION}.tasks: {cfg.tasks} must be a non-empty subset of {list(TASKS)}")
    if cfg.body not in BODIES:
        raise ValueError(f"config {SECTION}.body: {cfg.body!r} is not one of {list(BODIES)}")
    if cfg.joint_intent and "ner" not in cfg.tasks:
        raise ValueError(f"config {SECTION}.joint_intent needs 'ner' in {SECTION}.tasks")
    if cfg.entity_num < 1 or cfg.ner_oversample < 1 or cfg.epochs < 1:
        raise ValueError(f"config {SECTION}: entity_num, ner_oversample and epochs must be >= 1")
    if not 0.0 < cfg.ner_label_fraction <= 1.0 or not 0.0 < cfg.paper_ner_fraction <= 1.0:
        raise ValueError(f"config {SECTION}: ner_label_fraction and paper_ner_fraction must be in (0, 1]")
    return cfg


def load_qu_config(path: str | Path | None = None, overrides: list[str] | None = None) -> QUConfig:
    """Defaults, then the preset, then ``key=value`` (or ``query_understanding.key=value``) overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config: preset {path} does not exist")
        tree = yaml.safe_load(path.read_text()) or {}
        values = dict(tree.get(SECTION, {}) if SECTION in tree else tree)
    for item in overrides or []:
        key, value = parse_override(item)
        values[key.removeprefix(f"{SECTION}.")] = value
    known = {f.name for f in dataclasses.fields(QUConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown} in '{SECTION}'; known: {sorted(known)}")
    return check_config(QUConfig(**values))


def read_run(paths: RunPaths) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """examples, products, folds of a prepared run (``python -m esci.pipeline`` writes them)."""
    files = [paths.examples, paths.root / "products.parquet", paths.folds]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"query understanding: {missing} missing; run `python -m esci.pipeline "
                                f"--run {paths.root.name}` first")
    return tuple(pd.read_parquet(p) for p in files)
