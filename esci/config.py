"""One config object per stage, loaded from a YAML preset plus ``section.key=value`` overrides.

The run's resolved config (every section) is saved to ``runs/<run>/config.yaml``; each stage's
fingerprint is the hash of the sections it reads, so a rerun skips a stage only when those
sections and its inputs are unchanged.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class DataConfig:
    data_dir: str = "data/esci_sample"
    subset: str = "all"  # all | small | large: the official small_version / large_version flags
    product_fields: list[str] = field(
        default_factory=lambda: ["title", "brand", "color", "bullets", "description"])
    field_sep: str = " | "
    max_field_chars: int = 1000
    locale_marker: bool = True


@dataclass
class CVConfig:
    n_folds: int = 5
    seed: int = 42


@dataclass
class BaselineConfig:
    enabled: bool = True
    task1: str = "ranker"  # ranker | expected_gain
    n_estimators: int = 200
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_child_samples: int = 20
    n_jobs: int = 1  # OpenMP threads spin-wait: on a shared 2-core machine 2 threads ran 15x slower
    seed: int = 42
    prior_model: bool = True  # also write the class-prior model, the floor every model must beat


@dataclass
class LeaderboardConfig:
    bootstrap: int = 1000
    seed: int = 0


def _stage_configs():
    # Stage configs live beside their stage code; imported here so one object holds the run.
    from ensemble.config import EnsembleConfig
    from esci.figures_config import FiguresConfig
    from finetune.config import FinetuneConfig
    from query_understanding.config import QUConfig
    return FinetuneConfig, EnsembleConfig, FiguresConfig, QUConfig


_Finetune, _Ensemble, _Figures, _QueryUnderstanding = _stage_configs()


@dataclass
class PipelineConfig:
    run: str = "sample"
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    finetune: _Finetune = field(default_factory=_Finetune)
    query_understanding: _QueryUnderstanding = field(default_factory=_QueryUnderstanding)
    ensemble: _Ensemble = field(default_factory=_Ensemble)
    leaderboard: LeaderboardConfig = field(default_factory=LeaderboardConfig)
    figures: _Figures = field(default_factory=_Figures)


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"config: '{where or 'top level'}' must be a mapping, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown} in '{where or 'top level'}'; "
                         f"known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}".strip("."))
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"config override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw != "" else ""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                cls=PipelineConfig):
    """Defaults, then the YAML preset at ``path``, then ``section.key=value`` overrides."""
    tree = dataclasses.asdict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config: preset {path} does not exist")
        preset = yaml.safe_load(path.read_text()) or {}
        _merge(tree, preset)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(tree, key, value)
    return _build(cls, tree, "")


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def to_yaml(cfg) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True)


def fingerprint(*parts: Any) -> str:
    """Stable hash of config sections (dataclasses or plain values) and input descriptions."""
    def plain(x):
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x
    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
