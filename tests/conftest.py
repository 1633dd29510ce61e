"""Shared fixtures: the bundled real sample, and one tiny end-to-end run reused by many tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "esci_sample"
TINY_PRESET = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """RunPaths of the whole pipeline run once on the real sample with configs/tiny.yaml."""
    from esci.config import load_config
    from esci.pipeline import run_pipeline
    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config(TINY_PRESET, [f"runs_dir={runs}", f"data.data_dir={SAMPLE_DIR}"])
    return run_pipeline(cfg)
