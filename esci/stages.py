"""Stage stamps: a rerun skips a stage whose outputs exist and whose fingerprint is unchanged."""
from __future__ import annotations

import json
from pathlib import Path

from esci.artifacts import RunPaths, write_json


def _stamp(paths: RunPaths, stage: str) -> Path:
    return paths.stamps_dir / f"{stage}.json"


def is_fresh(paths: RunPaths, stage: str, fp: str) -> bool:
    stamp = _stamp(paths, stage)
    if not stamp.is_file():
        return False
    record = json.loads(stamp.read_text())
    return record.get("fingerprint") == fp and all(Path(p).exists() for p in record.get("outputs", []))


def mark_done(paths: RunPaths, stage: str, fp: str, outputs: list[Path]) -> None:
    write_json({"fingerprint": fp, "outputs": [str(p) for p in outputs]}, _stamp(paths, stage))


def stamp_fingerprint(paths: RunPaths, stage: str) -> str | None:
    """The fingerprint a finished stage recorded; later stages fold it into their own."""
    stamp = _stamp(paths, stage)
    return json.loads(stamp.read_text()).get("fingerprint") if stamp.is_file() else None
