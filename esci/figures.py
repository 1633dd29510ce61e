"""Pipeline stage: the run's key figures as PNG files under ``runs/<run>/figures/``.

Reads whatever the run has (leaderboard, out-of-fold predictions, confident-learning flags) and
draws it with :mod:`esci.plots`; the notebooks call the same readers and plot functions, so a
user without Jupyter gets the same pictures. Figures of a stage the run lacks are not drawn.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from esci.artifacts import RunPaths, write_csv, write_json
from esci.config import PipelineConfig
from esci.figures_config import FiguresConfig
from esci import plots

# Query-level groupings of the error-analysis figures: figure name -> column of predictions().
GROUPINGS = {"f1_by_locale": "product_locale", "f1_by_query_length": "query_length",
             "f1_by_query_source": "query_source"}
FIGURES = ["leaderboard", "fold_scores", "confusion_by_locale", *GROUPINGS, "calibration",
           "ndcg_distribution", "label_noise"]


# --- readers shared with the notebooks ---------------------------------------------------------

def run_paths(run_dir: str | Path) -> RunPaths:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    return RunPaths(run_dir.parent, run_dir.name)


def read_leaderboard(paths: RunPaths) -> pd.DataFrame | None:
    return pd.read_csv(paths.leaderboard_csv) if paths.leaderboard_csv.is_file() else None


def read_fold_scores(paths: RunPaths) -> pd.DataFrame | None:
    return pd.read_csv(paths.fold_scores) if paths.fold_scores.is_file() else None


def pick_models(paths: RunPaths, max_models: int | None = None) -> list[str]:
    """Models with out-of-fold files, best first by the leaderboard's order, non-leaky first
    (a leaky model's errors say little about the real problem)."""
    available = paths.models()
    board = read_leaderboard(paths)
    if board is not None:
        ranked = board.sort_values("leak", kind="mergesort") if "leak" in board.columns else board
        order = [m for m in ranked["model"].astype(str) if m in available]
        available = order + [m for m in available if m not in order]
    return available[:max_models] if max_models else available


def predictions(paths: RunPaths, models: list[str]) -> pd.DataFrame:
    """Out-of-fold rows of ``models`` stacked with a ``model`` column, plus the query-level
    columns the error analysis groups by: ``query_length`` (bucket) and ``query_source``."""
    examples = pd.read_parquet(paths.examples, columns=["query_id", "query", "query_source"])
    queries = examples.drop_duplicates("query_id")
    query_cols = pd.DataFrame({
        "query_id": queries["query_id"].to_numpy(),
        "query_length": plots.query_length_bucket(queries["query"]).to_numpy(),
        "query_source": pd.Categorical(queries["query_source"].fillna("unknown"))})
    frames = [pd.read_parquet(paths.oof(m)).assign(model=m) for m in models]
    preds = pd.concat(frames, ignore_index=True).merge(query_cols, on="query_id", how="left")
    preds["model"] = pd.Categorical(preds["model"], models)
    return preds


def read_cleanlab_tables(paths: RunPaths) -> dict[str, pd.DataFrame]:
    """Every parquet/CSV table under ``runs/<run>/cleanlab/``, keyed by file name."""
    folder = paths.root / "cleanlab"
    files = sorted(folder.glob("*.parquet")) + sorted(folder.glob("*.csv"))
    return {f.name: pd.read_parquet(f) if f.suffix == ".parquet"
            else pd.read_csv(f, dtype={"example_id": str}) for f in files}


def is_flag_table(table: pd.DataFrame) -> bool:
    return set(plots.FLAG_COLUMNS) <= set(table.columns)


def read_cleanlab_flags(paths: RunPaths) -> pd.DataFrame | None:
    """The confident-learning flags: the tables under ``runs/<run>/cleanlab/`` with the columns
    example_id, given_label, suggested_label, quality (stacked, with a ``source`` column naming
    the file), or None when the run has none."""
    frames = [t.assign(source=name) for name, t in read_cleanlab_tables(paths).items() if is_flag_table(t)]
    if not frames:
        return None
    flags = pd.concat(frames, ignore_index=True)
    flags["example_id"] = flags["example_id"].astype(str)
    return flags


def tables_named(paths: RunPaths, word: str) -> dict[str, pd.DataFrame]:
    """CSV tables anywhere in the run whose file name contains ``word`` (e.g. "ablation"),
    keyed by their path relative to the run directory."""
    return {str(f.relative_to(paths.root)): pd.read_csv(f)
            for f in sorted(paths.root.rglob(f"*{word}*.csv")) if f.is_file()}


# --- the stage ---------------------------------------------------------------------------------

def write_figures(paths: RunPaths, cfg: FiguresConfig) -> list[Path]:
    out_dir = paths.figures_dir
    written: list[Path] = []
    board, folds = read_leaderboard(paths), read_fold_scores(paths)
    if board is not None:
        written.append(plots.leaderboard(board, out_dir / "leaderboard.png", fold_scores=folds))
    if folds is not None:
        written.append(plots.fold_scores(folds, out_dir / "fold_scores.png"))

    models = pick_models(paths, cfg.max_models)
    if models:
        preds = predictions(paths, models)
        best = preds[preds["model"] == models[0]]
        written.append(plots.confusion_by_locale(best, out_dir / "confusion_by_locale.png"))
        tables = []
        for name, column in GROUPINGS.items():
            scores = plots.scores_by_group(preds, column)
            tables.append(scores)
            written.append(plots.f1_by_group(scores, out_dir / f"{name}.png", title=f"by {column}"))
        written.append(write_table(pd.concat(tables, ignore_index=True), out_dir / "scores_by_group.csv"))
        written.append(plots.calibration(preds, out_dir / "calibration.png", n_bins=cfg.calibration_bins))
        written.append(plots.ndcg_distribution(preds, out_dir / "ndcg_distribution.png"))
        products = pd.read_parquet(paths.root / "products.parquet",
                                   columns=["product_id", "product_locale", "product_title"])
        examples = pd.read_parquet(paths.examples, columns=["example_id", "query"])
        worst = plots.worst_queries(best.drop(columns="model"), examples, products, n=cfg.worst_queries)
        written.append(write_table(worst, out_dir / "worst_queries.csv"))

    flags = read_cleanlab_flags(paths)
    if flags is not None:
        labels = pd.read_parquet(paths.examples, columns=["example_id", "esci_label"])
        written.append(plots.label_noise(flags, out_dir / "label_noise.png", examples=labels))

    _remove_stale(out_dir, written)
    index = out_dir / "figures.json"
    write_json({"models": models, "files": sorted(p.name for p in written)}, index)
    return written + [index]


def write_table(df: pd.DataFrame, path: Path) -> Path:
    write_csv(df, path)
    return path


def _remove_stale(out_dir: Path, written: list[Path]) -> None:
    """Drop this stage's figures from an earlier run of the directory that this run did not
    redraw (say, label_noise.png after the cleanlab output went away), so none is mistaken for
    current. Files of other names are left alone."""
    keep = {p.name for p in written}
    for name in FIGURES:
        stale = out_dir / f"{name}.png"
        if stale.name not in keep and stale.is_file():
            stale.unlink()


def run(cfg: PipelineConfig, paths: RunPaths) -> list[Path]:
    written = write_figures(paths, cfg.figures)
    print(f"figures: {len([p for p in written if p.suffix == '.png'])} PNG files -> {paths.figures_dir}")
    return written
