"""The notebooks: stored without outputs, and run top to bottom against real run directories."""
from __future__ import annotations

import asyncio
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


def client_for(path: Path, **params) -> NotebookClient:
    """A client that runs ``path`` top to bottom with ``params`` set after the defaults (as
    papermill does); a cell that raises makes its execution raise CellExecutionError."""
    nb = nbformat.read(path, as_version=4)
    cell = parameters_cell(nb)
    cell.source += "\n# injected by the test\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    # The kernel starts in notebooks/, as it does in `jupyter lab`: the setup cell must find the repo.
    return NotebookClient(nb, timeout=300, kernel_name="python3", kernel_manager_class=ThisPythonKernel,
                          resources={"metadata": {"path": str(NOTEBOOK_DIR)}})


def execute_all(jobs: dict[str, tuple[Path, dict]]) -> dict[str, nbformat.NotebookNode | BaseException]:
    """Run several notebooks at once (kernel start-up is mostly waiting); each result is the
    executed notebook or the exception its run raised, for the test of that notebook to raise."""
    clients = {key: client_for(path, **params) for key, (path, params) in jobs.items()}

    async def run_all():
        return await asyncio.gather(*(c.async_execute() for c in clients.values()), return_exceptions=True)

    results = asyncio.run(run_all())
    return {key: (res if isinstance(res, BaseException) else clients[key].nb)
            for key, res in zip(clients, results)}


def executed(results: dict, key: str) -> nbformat.NotebookNode:
    if isinstance(results[key], BaseException):
        raise results[key]
    return results[key]


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


@pytest.fixture(scope="module")
def tiny_run_notebooks(tiny_run, tmp_path_factory):
    """Every notebook executed against the tiny run, each writing its figures to its own folder."""
    jobs = {path.stem: (path, {"run_dir": str(tiny_run.root),
                               "fig_dir": str(tmp_path_factory.mktemp(f"figs_{path.stem}"))})
            for path in NOTEBOOKS}
    return jobs, execute_all(jobs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_tiny_run(path, tiny_run_notebooks):
    jobs, results = tiny_run_notebooks
    nb = executed(results, path.stem)
    fig_dir = Path(jobs[path.stem][1]["fig_dir"])
    written = {p.name for p in fig_dir.glob("*.png")}
    assert written == FIGURES_ON_TINY_RUN[path.stem]
    for png in fig_dir.glob("*.png"):
        assert_not_blank(png)
    assert n_images(nb) == len(written)  # every figure it wrote is also shown


def test_notebooks_run_on_a_run_without_models(tiny_run, tmp_path):
    """A run with only the prepare stage's outputs (no models, no leaderboard), plus made-up
    confident-learning flags: 01 and 02 say what is missing, 03 shows the flags."""
    import pandas as pd
    run = tmp_path / "runs" / "bare"
    run.mkdir(parents=True)
    for name in ("examples.parquet", "products.parquet", "folds.parquet"):
        shutil.copy(tiny_run.root / name, run / name)
    examples = pd.read_parquet(run / "examples.parquet")
    flags = fake_flags(examples, 30)
    (run / "cleanlab").mkdir()
    flags.to_parquet(run / "cleanlab" / "flags.parquet")
    pd.DataFrame({"variant": ["all labels", "flagged removed"], "task2_micro_f1": [0.5, 0.6]}).to_csv(
        run / "cleanlab" / "effect.csv", index=False)
    jobs = {path.stem: (path, {"run_dir": str(run), "fig_dir": str(tmp_path / path.stem)}) for path in NOTEBOOKS}
    results = execute_all(jobs)

    for stem in ("01_leaderboard", "02_error_analysis"):
        nb = executed(results, stem)
        assert "This run has no" in outputs_text(nb), stem
        assert n_images(nb) == 0, stem

    nb = executed(results, "03_label_noise")
    assert_not_blank(tmp_path / "03_label_noise" / "label_noise.png")
    text = outputs_text(nb)
    least_trusted = flags.nsmallest(1, "quality")["example_id"].iloc[0]
    query = examples.set_index("example_id").loc[least_trusted, "query"]
    assert query in text or html.escape(query) in text  # the flagged-examples table lists it
    assert "cleanlab/effect.csv" in text and "flagged removed" in text
