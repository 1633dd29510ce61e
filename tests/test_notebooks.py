"""The notebooks: stored without outputs, and run top to bottom against real run directories."""
from __future__ import annotations

import html
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpec
from nbclient import NotebookClient

from tests.test_plots import assert_not_blank, fake_flags

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# PNG files each notebook must write on the tiny run (which has no confident-learning output).
FIGURES_ON_TINY_RUN = {
    "01_leaderboard": {"leaderboard.png", "fold_scores.png"},
    "02_error_analysis": {"confusion_by_locale.png", "f1_by_locale.png", "f1_by_query_length.png",
                          "f1_by_query_source.png", "calibration.png", "ndcg_distribution.png"},
    "03_label_noise": set(),
}


class ThisPythonKernel(KernelManager):
    """Launches ipykernel under the interpreter running the tests (the venv's), whatever
    kernelspec named python3 a user's Jupyter directories might hold."""

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name="esci tests", language="python")


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    return cells[0]


def execute(path: Path, **params) -> nbformat.NotebookNode:
    """Run ``path`` top to bottom with ``params`` set after the defaults (as papermill does);
    any cell that raises fails with nbclient's CellExecutionError."""
    nb = nbformat.read(path, as_version=4)
    cell = parameters_cell(nb)
    cell.source += "\n# injected by the test\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    # The kernel starts in notebooks/, as it does in `jupyter lab`: the setup cell must find the repo.
    client = NotebookClient(nb, timeout=300, kernel_name="python3", kernel_manager_class=ThisPythonKernel,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts += [str(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(parts)


def n_images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def test_the_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} == set(FIGURES_ON_TINY_RUN)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
    for cell in nb.cells:
        assert set(cell.metadata) <= {"tags"}, f"cell {cell.get('id')}: metadata {dict(cell.metadata)}"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.get('id')} has outputs"
    assert 'run_dir = "runs/sample"' in parameters_cell(nb).source
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "sys.path.insert" in first_code.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_tiny_run(path, tiny_run, tmp_path):
    nb = execute(path, run_dir=str(tiny_run.root), fig_dir=str(tmp_path))
    written = {p.name for p in tmp_path.glob("*.png")}
    assert written == FIGURES_ON_TINY_RUN[path.stem]
    for png in tmp_path.glob("*.png"):
        assert_not_blank(png)
    assert n_images(nb) == len(written)  # every figure it wrote is also shown


@pytest.fixture()
def bare_run(tiny_run, tmp_path) -> Path:
    """A run with only the prepare stage's outputs: no models, no leaderboard."""
    run = tmp_path / "runs" / "bare"
    run.mkdir(parents=True)
    for name in ("examples.parquet", "products.parquet", "folds.parquet"):
        shutil.copy(tiny_run.root / name, run / name)
    return run


@pytest.mark.parametrize("stem", ["01_leaderboard", "02_error_analysis"])
def test_notebook_runs_on_a_run_without_models(stem, bare_run, tmp_path):
    nb = execute(NOTEBOOK_DIR / f"{stem}.ipynb", run_dir=str(bare_run), fig_dir=str(tmp_path / "figs"))
    assert "This run has no" in outputs_text(nb)
    assert n_images(nb) == 0


def test_label_noise_notebook_shows_flags(bare_run, tmp_path):
    import pandas as pd
    examples = pd.read_parquet(bare_run / "examples.parquet")
    flags = fake_flags(examples, 30)
    (bare_run / "cleanlab").mkdir()
    flags.to_parquet(bare_run / "cleanlab" / "flags.parquet")
    pd.DataFrame({"variant": ["all labels", "flagged removed"], "task2_micro_f1": [0.5, 0.6]}).to_csv(
        bare_run / "cleanlab" / "effect.csv", index=False)
    nb = execute(NOTEBOOK_DIR / "03_label_noise.ipynb", run_dir=str(bare_run), fig_dir=str(tmp_path / "figs"))
    assert_not_blank(tmp_path / "figs" / "label_noise.png")
    text = outputs_text(nb)
    least_trusted = flags.nsmallest(1, "quality")["example_id"].iloc[0]
    query = examples.set_index("example_id").loc[least_trusted, "query"]
    assert query in text or html.escape(query) in text  # the flagged-examples table lists it
    assert "cleanlab/effect.csv" in text and "flagged removed" in text
