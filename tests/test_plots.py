"""The plotting module and the figures stage: every key figure of the tiny run exists and shows data."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from esci import figures, plots
from esci.figures_config import FiguresConfig

STAGE_FIGURES = ["leaderboard", "fold_scores", "confusion_by_locale", "f1_by_locale",
                 "f1_by_query_length", "f1_by_query_source", "calibration", "ndcg_distribution"]


def assert_not_blank(path: Path) -> None:
    """A PNG passes if it varies at all and carries coloured marks: every plot draws its data in
    colour, while empty axes, ticks and titles are black, grey or white."""
    import matplotlib.image as mpimg
    rgb = mpimg.imread(path)[..., :3]
    assert rgb.std() > 0.02, f"{path.name}: blank (pixel std {rgb.std():.4f})"
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.15
    assert coloured.mean() > 1e-3, f"{path.name}: no coloured marks ({coloured.mean():.5f} of pixels)"


def test_blank_check_rejects_empty_axes(tmp_path):
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.set_title("axes but no data")
    path = plots._save(fig, tmp_path / "empty.png")
    with pytest.raises(AssertionError, match="no coloured marks"):
        assert_not_blank(path)


def test_stage_writes_every_key_figure(tiny_run):
    fig_dir = tiny_run.figures_dir
    for name in STAGE_FIGURES:
        assert (fig_dir / f"{name}.png").is_file(), f"missing figures/{name}.png"
    pngs = sorted(fig_dir.glob("*.png"))
    for png in pngs:
        assert_not_blank(png)
    index = pd.read_json(fig_dir / "figures.json", typ="series")
    assert set(index["files"]) >= {f"{name}.png" for name in STAGE_FIGURES}
    assert index["models"] == figures.pick_models(tiny_run, FiguresConfig().max_models)
    assert not (fig_dir / "label_noise.png").exists()  # the tiny run has no confident learning


def test_stage_tables(tiny_run):
    worst = pd.read_csv(tiny_run.figures_dir / "worst_queries.csv")
    assert worst["query_nDCG"].is_monotonic_increasing
    assert 0 < worst["query"].nunique() <= FiguresConfig().worst_queries
    assert {"query", "label", "predicted", "product_title"} <= set(worst.columns)
    groups = pd.read_csv(tiny_run.figures_dir / "scores_by_group.csv")
    assert set(groups["by"]) == set(figures.GROUPINGS.values())


def test_group_scores_add_up_to_the_leaderboard(tiny_run):
    """Example-weighted group F1s must give back the pooled leaderboard F1 of each model."""
    board = pd.read_csv(tiny_run.leaderboard_csv).set_index("model")
    models = figures.pick_models(tiny_run)
    preds = figures.predictions(tiny_run, models)
    for column in figures.GROUPINGS.values():
        scores = plots.scores_by_group(preds, column)
        for model, part in scores.groupby("model", observed=True):
            assert part["n_examples"].sum() == (preds["model"] == model).sum()
            for metric in ("task2_micro_f1", "task3_micro_f1"):
                pooled = np.average(part[metric], weights=part["n_examples"])
                assert pooled == pytest.approx(board.loc[model, metric], abs=1e-9), (column, metric)


def test_worst_queries_are_the_lowest_ndcg(tiny_run):
    model = figures.pick_models(tiny_run)[0]
    preds = pd.read_parquet(tiny_run.oof(model))
    examples = pd.read_parquet(tiny_run.examples)
    worst = plots.worst_queries(preds, examples, n=3)
    per_q = plots.ndcg_per_model(preds)
    lowest = per_q[per_q["informative"]].nsmallest(3, "ndcg")["ndcg"]
    assert sorted(worst["query_nDCG"].unique()) == pytest.approx(sorted(lowest.unique()))
    for _, rows in worst.groupby("query", sort=False):
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
        assert rows["score"].is_monotonic_decreasing


def test_stage_on_a_run_without_models_drops_stale_figures(tiny_run, tmp_path):
    """A run with only the prepare outputs gets no figures, and figures this stage drew in an
    earlier life of the directory go, so none is mistaken for current; other files stay."""
    run = tmp_path / "bare"
    (run / "figures").mkdir(parents=True)
    for name in ("examples.parquet", "products.parquet", "folds.parquet"):
        shutil.copy(tiny_run.root / name, run / name)
    for name in ("leaderboard.png", "label_noise.png", "my_notes.png"):
        shutil.copy(tiny_run.figures_dir / "calibration.png", run / "figures" / name)
    written = figures.write_figures(figures.run_paths(run), FiguresConfig())
    assert [p.name for p in written] == ["figures.json"]
    assert sorted(p.name for p in (run / "figures").glob("*.png")) == ["my_notes.png"]


def fake_flags(examples: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Made-up confident-learning flags (random rows, a different suggested label) for plotting."""
    rng = np.random.default_rng(seed)
    rows = examples.sample(n, random_state=seed)
    shift = rng.integers(1, 4, size=n)
    given = rows["esci_label"].map({label: i for i, label in enumerate(plots.LABELS)}).to_numpy()
    return pd.DataFrame({"example_id": rows["example_id"].to_numpy(), "given_label": rows["esci_label"].to_numpy(),
                         "suggested_label": np.array(plots.LABELS)[(given + shift) % 4],
                         "quality": rng.uniform(0, 0.5, size=n)})


def test_label_noise_figure_and_table(tiny_run, tmp_path):
    examples = pd.read_parquet(tiny_run.examples)
    flags = fake_flags(examples, 40)
    assert_not_blank(plots.label_noise(flags, tmp_path / "noise.png", examples=examples))
    table = plots.flagged_examples(flags, examples, n=10)
    assert len(table) == 10 and table["quality"].is_monotonic_increasing
    assert table["query"].notna().all()


def test_cleanlab_flags_are_found(tiny_run, tmp_path):
    run = tmp_path / "run"
    (run / "cleanlab").mkdir(parents=True)
    examples = pd.read_parquet(tiny_run.examples)
    fake_flags(examples, 5).to_parquet(run / "cleanlab" / "flags.parquet")
    pd.DataFrame({"variant": ["all", "cleaned"], "task2_micro_f1": [0.5, 0.6]}).to_csv(
        run / "cleanlab" / "effect.csv", index=False)
    paths = figures.run_paths(run)
    flags = figures.read_cleanlab_flags(paths)
    assert len(flags) == 5 and set(flags["source"]) == {"flags.parquet"}
    assert figures.read_cleanlab_flags(figures.run_paths(tiny_run.root)) is None


def test_feature_importance_and_fold_scores(tmp_path):
    table = pd.DataFrame({"feature": [f"f{i}" for i in range(8)] * 2, "importance": np.arange(16.0),
                          "task": ["task1"] * 8 + ["task2"] * 8})
    assert_not_blank(plots.feature_importance(table, tmp_path / "fi.png"))
    assert_not_blank(plots.feature_importance(table.drop(columns="task"), tmp_path / "fi1.png"))
    folds = pd.DataFrame([{"model": m, "fold": k, "metric": metric, "value": v + 0.01 * k}
                          for m, v in (("a", 0.6), ("b", 0.65)) for k in range(3)
                          for metric in ("task2_micro_f1", "task3_micro_f1")])
    assert_not_blank(plots.fold_scores(folds, tmp_path / "folds.png"))
    with pytest.raises(ValueError, match=r"fold_scores: missing columns \['value'\]"):
        plots.fold_scores(folds.drop(columns="value"), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_query_length_buckets():
    queries = pd.Series(["usb", "usb c", "usb c cable", "a b c d", "a b c d e f", "ワイヤレスイヤホン", None])
    assert plots.query_length_bucket(queries).astype(str).tolist() == ["1", "2", "3", "4-5", "6+", "1", "1"]
