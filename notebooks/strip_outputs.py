"""Strip outputs, execution counts and run-time metadata from notebooks, so they are stored clean.

    .venv/bin/python notebooks/strip_outputs.py [NOTEBOOK ...]   (default: notebooks/*.ipynb)

Run it before committing a notebook you ran in Jupyter; tests/test_notebooks.py fails on outputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info")
KEEP_CELL_METADATA = ("tags",)


def strip(nb: nbformat.NotebookNode) -> bool:
    """Clean ``nb`` in place; True if anything changed."""
    before = nbformat.writes(nb)
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP_NOTEBOOK_METADATA}
    if "language_info" in nb.metadata:
        nb.metadata["language_info"] = {"name": nb.metadata["language_info"].get("name", "python")}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nbformat.writes(nb) != before


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted(Path(__file__).parent.glob("*.ipynb"))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            nbformat.write(nb, path)
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
