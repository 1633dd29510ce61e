"""The project's one plotting module: data frames in, a PNG file out.

Every ``plot`` function takes frames in the run directory's documented schemas plus an output
path, writes the PNG atomically (``esci.artifacts.atomic_path``) and returns the path. Figures
are built with ``matplotlib.figure.Figure`` rather than pyplot, so nothing depends on the active
backend or leaks global figure state; notebooks show the written file, the same picture the
pipeline's figures stage leaves in ``runs/<run>/figures/``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from esci.artifacts import LABELS, PROB_COLUMNS as PROBS, atomic_path
from esci.leaderboard import crossfit_task3, task2_predictions
from esci.metrics import gains_of, ndcg_per_query

PANEL_W, PANEL_H = 4.2, 3.2


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _check_columns(df: pd.DataFrame, required: list[str], name: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing} (has {list(df.columns)})")
    if df.empty:
        raise ValueError(f"{name}: no rows to plot")


def _grid(n_panels: int, max_cols: int = 3, w: float = PANEL_W, h: float = PANEL_H):
    cols = min(n_panels, max_cols)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(w * cols, h * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


# --- models and folds --------------------------------------------------------------------------

def feature_importance(table: pd.DataFrame, path: str | Path, top: int = 20) -> Path:
    """Horizontal bars of the ``top`` most important features; one panel per ``task`` if given.

    ``table``: columns ``feature, importance`` and optionally ``task``. Duplicate features within
    a panel (for example one row per fold) are averaged.
    """
    _check_columns(table, ["feature", "importance"], "feature_importance")
    groups = list(table.groupby("task", sort=True)) if "task" in table.columns else [(None, table)]
    fig, axes = _grid(len(groups), w=5.0, h=0.28 * min(top, table["feature"].nunique()) + 1.2)
    for ax, (task, part) in zip(axes, groups):
        mean = part.groupby("feature")["importance"].mean().sort_values(ascending=False).head(top)
        ax.barh(np.arange(len(mean)), mean.to_numpy(), color="tab:blue")
        ax.set_yticks(np.arange(len(mean)), mean.index.astype(str), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("importance")
        ax.set_title(f"feature importance: {task}" if task is not None else "feature importance")
    return _save(fig, path)


def fold_scores(fold_scores: pd.DataFrame, path: str | Path, metrics: list[str] | None = None) -> Path:
    """Per-fold score of every model side by side, one panel per metric.

    ``fold_scores``: columns ``model, fold, metric, value`` (``runs/<run>/fold_scores.csv``). A
    thin line joins the same fold across models: folds are paired, so a model that wins on every
    fold shows as parallel lines even when the spread between folds is larger than the gap.
    """
    _check_columns(fold_scores, ["model", "fold", "metric", "value"], "fold_scores")
    metrics = metrics or list(dict.fromkeys(fold_scores["metric"]))
    models = list(dict.fromkeys(fold_scores["model"]))
    folds = sorted(fold_scores["fold"].unique())
    colors = _fold_colors(folds)
    fig, axes = _grid(len(metrics), w=max(PANEL_W, 0.9 * len(models) + 1.5))
    for ax, metric in zip(axes, metrics):
        part = fold_scores[fold_scores["metric"] == metric]
        wide = part.pivot_table(index="fold", columns="model", values="value").reindex(columns=models)
        x = np.arange(len(models))
        for fold in wide.index:
            ax.plot(x, wide.loc[fold].to_numpy(), "-o", color=colors[fold], alpha=0.7,
                    lw=0.8, ms=4, label=f"fold {fold}")
        ax.plot(x, wide.mean().to_numpy(), "_", color="black", ms=18, mew=2, label="mean")
        _model_axis(ax, models)
        ax.set_title(metric)
    axes[0].legend(fontsize=7, loc="best")
    return _save(fig, path)


def _fold_colors(folds) -> dict:
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    return {f: cmap(i % 10) for i, f in enumerate(folds)}


def _model_axis(ax, models: list[str]) -> None:
    ax.set_xticks(np.arange(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(models) - 0.5)
    ax.grid(axis="y", alpha=0.3)


def leaderboard(board: pd.DataFrame, path: str | Path, fold_scores: pd.DataFrame | None = None,
                metrics: list[str] | None = None) -> Path:
    """CV leaderboard: pooled score with its 95% bootstrap CI, and the per-fold scores as dots.

    ``board``: ``runs/<run>/leaderboard.csv`` (``model``, optional ``leak``, and for each metric
    ``<metric>``, ``<metric>_lo``, ``<metric>_hi``, ``<metric>_std``). ``fold_scores``: optional
    ``model, fold, metric, value``. Models keep the board's order (best first); a leaky model is
    drawn hollow and labelled, since its score is not comparable.
    """
    _check_columns(board, ["model"], "leaderboard")
    metrics = metrics or [c for c in board.columns
                          if f"{c}_lo" in board.columns and f"{c}_hi" in board.columns]
    if not metrics:
        raise ValueError("leaderboard: no <metric>/<metric>_lo/<metric>_hi column triple")
    models = board["model"].astype(str).tolist()
    leak = board["leak"].astype(bool).to_numpy() if "leak" in board.columns else np.zeros(len(board), bool)
    labels = [f"{m} (leak)" if lk else m for m, lk in zip(models, leak)]
    x = np.arange(len(models))
    fig, axes = _grid(len(metrics), w=max(PANEL_W, 0.9 * len(models) + 1.5))
    for ax, metric in zip(axes, metrics):
        value = board[metric].to_numpy(dtype=float)
        err = np.vstack([value - board[f"{metric}_lo"].to_numpy(dtype=float),
                         board[f"{metric}_hi"].to_numpy(dtype=float) - value])
        if fold_scores is not None:
            part = fold_scores[fold_scores["metric"] == metric]
            for i, model in enumerate(models):
                vals = part.loc[part["model"] == model, "value"].to_numpy(dtype=float)
                jitter = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(len(vals))
                ax.scatter(i + 0.25 + jitter, vals, s=12, color="grey", alpha=0.7, zorder=2,
                           label="fold" if i == 0 else None)
        for i in range(len(models)):
            ax.errorbar(x[i], value[i], yerr=err[:, i:i + 1], fmt="o", capsize=4, zorder=3,
                        color="tab:red" if leak[i] else "tab:blue",
                        mfc="white" if leak[i] else None,
                        label="pooled, 95% CI" if i == 0 else None)
        _model_axis(ax, labels)
        ax.set_title(metric)
    axes[0].legend(fontsize=7, loc="best")
    return _save(fig, path)


# --- error analysis of out-of-fold predictions --------------------------------------------------
# ``preds`` below is out-of-fold rows (``runs/<run>/oof/<model>.parquet``) of one or more models,
# stacked with a ``model`` column, plus whatever grouping columns a figure needs.

LENGTH_BUCKETS = ["1", "2", "3", "4-5", "6+"]


def query_length_bucket(queries: pd.Series) -> pd.Series:
    """Query length in whitespace-separated words, bucketed (a Japanese query without spaces is
    one word: bucket by words, not by characters, so jp is not all in "6+")."""
    n_words = queries.fillna("").str.split().str.len().clip(lower=1)
    bucket = pd.cut(n_words, [0, 1, 2, 3, 5, np.inf], labels=LENGTH_BUCKETS)
    return bucket.astype(pd.CategoricalDtype(LENGTH_BUCKETS, ordered=True))


def _models(preds: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(preds["model"])) if "model" in preds.columns else ["model"]


def _by_model(preds: pd.DataFrame):
    if "model" not in preds.columns:
        yield "model", preds
        return
    for model in _models(preds):
        yield model, preds[preds["model"] == model]


def scores_by_group(preds: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per model and per value of column ``by`` (null -> "unknown"): example and query counts,
    task-1 nDCG over informative queries, task-2 micro-F1, and task-3 micro-F1 (substitute
    decisions cross-fitted on the other folds, as on the leaderboard)."""
    _check_columns(preds, ["query_id", "esci_label", "score", "fold", by] + PROBS, "scores_by_group")
    rows = []
    for model, part in _by_model(preds):
        part = part.reset_index(drop=True)
        group = part[by].astype(object).where(part[by].notna(), "unknown").astype(str)
        hit2 = task2_predictions(part) == part["esci_label"].to_numpy()
        hit3 = crossfit_task3(part) == (part["esci_label"] == "S").to_numpy()
        for value, idx in group.groupby(group, sort=False).groups.items():
            g = part.loc[idx]
            per_q = ndcg_per_query(g["query_id"], gains_of(g["esci_label"]), g["score"])
            inf = per_q.loc[per_q["informative"], "ndcg"]
            rows.append({"model": model, "by": by, "group": value, "n_examples": len(g),
                         "n_queries": len(per_q), "n_informative": len(inf),
                         "task1_ndcg_informative": inf.mean() if len(inf) else np.nan,
                         "task2_micro_f1": hit2[idx].mean(), "task3_micro_f1": hit3[idx].mean()})
    out = pd.DataFrame(rows)
    order = (list(preds[by].cat.categories) if isinstance(preds[by].dtype, pd.CategoricalDtype)
             else sorted(out["group"].unique(), key=lambda g: (g == "unknown", g)))
    order += [g for g in out["group"].unique() if g not in order]
    out["group"] = pd.Categorical(out["group"], [g for g in order if g in set(out["group"])], ordered=True)
    return out.sort_values(["model", "group"], kind="mergesort").reset_index(drop=True)


def f1_by_group(scores: pd.DataFrame, path: str | Path, title: str | None = None,
                metrics: tuple[str, ...] = ("task2_micro_f1", "task3_micro_f1",
                                            "task1_ndcg_informative")) -> Path:
    """Grouped bars: one panel per metric, one bar per model within each group.

    ``scores``: the frame of :func:`scores_by_group`. Tick labels carry what each bar averages
    over (examples; informative queries for nDCG), so a striking bar over ten examples reads as
    the noise it is, and a group with nothing to score is marked "n/a" rather than left blank.
    """
    _check_columns(scores, ["model", "group", "n_examples"] + list(metrics), "f1_by_group")
    models = list(dict.fromkeys(scores["model"]))
    present = set(scores["group"])
    categories = scores["group"].cat.categories if hasattr(scores["group"], "cat") else scores["group"]
    groups = [g for g in dict.fromkeys(categories) if g in present]
    x = np.arange(len(groups))
    width = 0.8 / len(models)
    fig, axes = _grid(len(metrics), w=max(PANEL_W, 0.55 * len(groups) * max(1, len(models) / 2) + 1.5))
    for ax, metric in zip(axes, metrics):
        count_col, count_name = (("n_informative", "inf.q") if metric.startswith("task1")
                                 and "n_informative" in scores.columns else ("n_examples", "n"))
        counts = scores.groupby("group", observed=True)[count_col].max()
        for j, model in enumerate(models):
            values = scores[scores["model"] == model].set_index("group")[metric].reindex(groups)
            xs = x - 0.4 + width * (j + 0.5)
            ax.bar(xs, values.to_numpy(dtype=float), width, label=model if ax is axes[0] else None,
                   color=f"C{j}")
            for xi, v in zip(xs, values.to_numpy(dtype=float)):
                if np.isnan(v):
                    ax.text(xi, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_xticks(x, [f"{g}\n({count_name}={counts.get(g, 0)})" for g in groups], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(metric)
    fig.legend(loc="outside upper right", ncols=min(len(models), 4), fontsize=8)
    if title:
        fig.suptitle(title, x=0.02, ha="left")
    return _save(fig, path)


def confusion_by_locale(preds: pd.DataFrame, path: str | Path, model: str | None = None) -> Path:
    """Task-2 confusion matrices (true x predicted E/S/C/I), all locales then one per locale.

    Colour is the row share (recall of each true class); cells print count and share.
    ``preds`` must hold one model (or name it with ``model``).
    """
    _check_columns(preds, ["esci_label", "product_locale"] + PROBS, "confusion_by_locale")
    if model is not None and "model" in preds.columns:
        preds = preds[preds["model"] == model]
    if "model" in preds.columns and preds["model"].nunique() > 1:
        raise ValueError("confusion_by_locale: preds hold several models; pass model=")
    name = model or (preds["model"].iloc[0] if "model" in preds.columns else "")
    from sklearn.metrics import confusion_matrix
    pred = task2_predictions(preds)
    locales = [("all", np.ones(len(preds), bool))] + [
        (loc, (preds["product_locale"] == loc).to_numpy()) for loc in sorted(preds["product_locale"].unique())]
    fig, axes = _grid(len(locales), max_cols=4, w=3.4, h=3.3)
    for ax, (loc, mask) in zip(axes, locales):
        cm = confusion_matrix(preds["esci_label"].to_numpy()[mask], pred[mask], labels=list(LABELS))
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(4):
            for j in range(4):
                ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(4), LABELS)
        ax.set_yticks(range(4), LABELS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{loc} (n={int(mask.sum())})", fontsize=10)
    fig.suptitle(f"task 2 confusion, {name}" if name else "task 2 confusion")
    return _save(fig, path)


def calibration(preds: pd.DataFrame, path: str | Path, n_bins: int = 10,
                labels: tuple[str, ...] = ("E", "S")) -> Path:
    """Reliability diagrams of p_E and p_S (one line per model, Brier score in the legend),
    with the histogram of predicted probabilities below each: an empty bin is not evidence."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    _check_columns(preds, ["esci_label"] + [f"p_{label}" for label in labels], "calibration")
    fig = Figure(figsize=(PANEL_W * len(labels), 4.6), layout="constrained")
    grid = fig.add_gridspec(2, len(labels), height_ratios=[3, 1])
    bins = np.linspace(0, 1, n_bins + 1)
    for k, label in enumerate(labels):
        ax = fig.add_subplot(grid[0, k])
        hist = fig.add_subplot(grid[1, k], sharex=ax)
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
        for model, part in _by_model(preds):
            truth = (part["esci_label"] == label).to_numpy()
            prob = part[f"p_{label}"].to_numpy(dtype=float)
            frac, mean = calibration_curve(truth, prob, n_bins=n_bins, strategy="uniform")
            brier = brier_score_loss(truth, prob) if truth.any() and not truth.all() else np.nan
            line, = ax.plot(mean, frac, "-o", ms=3, label=f"{model} (Brier {brier:.3f})")
            hist.hist(prob, bins=bins, histtype="step", color=line.get_color())
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"observed share of {label}")
        ax.set_title(f"calibration of p_{label}")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        hist.set_yscale("log")
        hist.set_xlabel(f"predicted p_{label}")
        hist.set_ylabel("rows")
    return _save(fig, path)


def ndcg_per_model(preds: pd.DataFrame) -> pd.DataFrame:
    """Per model and query: ``model, query_id, ndcg, n_products, informative``."""
    _check_columns(preds, ["query_id", "esci_label", "score"], "ndcg_per_model")
    return pd.concat([ndcg_per_query(p["query_id"], gains_of(p["esci_label"]), p["score"])
                      .assign(model=m) for m, p in _by_model(preds)], ignore_index=True)


def ndcg_distribution(preds: pd.DataFrame, path: str | Path, bins: int = 20) -> Path:
    """Task-1 nDCG over informative queries (>= 2 distinct gains; the others score 1 whatever
    the order): a histogram per model, and the cumulative share of queries below each nDCG."""
    per_q = ndcg_per_model(preds)
    per_q = per_q[per_q["informative"]]
    fig, (hist, cdf) = _grid(2, w=PANEL_W + 0.6)
    edges = np.linspace(0, 1, bins + 1)
    for model, part in per_q.groupby("model", sort=False):
        v = np.sort(part["ndcg"].to_numpy())
        hist.hist(v, bins=edges, histtype="step", lw=1.5, label=f"{model} (mean {v.mean():.3f})")
        cdf.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=model)
    n = per_q.groupby("model")["query_id"].size().max() if len(per_q) else 0
    hist.set_title(f"nDCG per informative query (n={n})")
    hist.set_xlabel("nDCG")
    hist.set_ylabel("queries")
    hist.legend(fontsize=7, loc="upper left")
    cdf.set_title("cumulative share of queries")
    cdf.set_xlabel("nDCG")
    cdf.set_ylabel("share of queries with nDCG <= x")
    cdf.set_xlim(0, 1.01)
    for ax in (hist, cdf):
        ax.grid(alpha=0.3)
    if per_q.empty:
        hist.text(0.5, 0.5, "no informative query", ha="center", transform=hist.transAxes)
    return _save(fig, path)


def worst_queries(preds: pd.DataFrame, examples: pd.DataFrame, products: pd.DataFrame | None = None,
                  n: int = 20, title_chars: int = 70) -> pd.DataFrame:
    """The ``n`` informative queries with the lowest nDCG for one model, every product of each,
    ranked by the model's score: ``query_nDCG, query, locale, rank, label, predicted, p_E..p_I,
    score, product_title`` (data, not a plot; ties on nDCG keep the query id order)."""
    if "model" in preds.columns and preds["model"].nunique() > 1:
        raise ValueError("worst_queries: preds hold several models; pass one")
    per_q = ndcg_per_model(preds)
    worst = per_q[per_q["informative"]].sort_values(["ndcg", "query_id"], kind="mergesort").head(n)
    rows = preds[preds["query_id"].isin(worst["query_id"])].merge(
        examples[["example_id", "query"]], on="example_id", how="left")
    if products is not None:
        titles = products[["product_id", "product_locale", "product_title"]]
        rows = rows.merge(titles, on=["product_id", "product_locale"], how="left")
        rows["product_title"] = rows["product_title"].fillna("").str.slice(0, title_chars)
    rows = rows.merge(worst[["query_id", "ndcg"]].rename(columns={"ndcg": "query_nDCG"}), on="query_id")
    rows["predicted"] = task2_predictions(rows)
    rows = rows.sort_values(["query_nDCG", "query_id", "score"], ascending=[True, True, False],
                            kind="mergesort")
    rows["rank"] = rows.groupby("query_id").cumcount() + 1
    cols = ["query_nDCG", "query", "product_locale", "rank", "esci_label", "predicted", *PROBS, "score"]
    cols += ["product_title"] if "product_title" in rows.columns else ["product_id"]
    return rows[cols].rename(columns={"product_locale": "locale", "esci_label": "label"}).reset_index(drop=True)


# --- confident learning -----------------------------------------------------------------------

FLAG_COLUMNS = ["example_id", "given_label", "suggested_label", "quality"]


def label_noise(flags: pd.DataFrame, path: str | Path, examples: pd.DataFrame | None = None) -> Path:
    """Examples flagged by confident learning: flags per given label split by the suggested
    label, the flagged share of each class (when ``examples`` is given), and the histogram of
    cleanlab's label-quality score of the flagged rows."""
    _check_columns(flags, FLAG_COLUMNS, "label_noise")
    counts = pd.crosstab(flags["given_label"], flags["suggested_label"]).reindex(
        index=list(LABELS), columns=list(LABELS), fill_value=0)
    n_panels = 3 if examples is not None else 2
    fig, axes = _grid(n_panels, w=PANEL_W)
    bottom = np.zeros(len(LABELS))
    for suggested in LABELS:
        axes[0].bar(LABELS, counts[suggested].to_numpy(), bottom=bottom, label=f"-> {suggested}")
        bottom += counts[suggested].to_numpy()
    axes[0].set_title(f"flags per given label (n={len(flags)})")
    axes[0].set_xlabel("given label")
    axes[0].set_ylabel("flagged examples")
    axes[0].legend(title="suggested", fontsize=7)
    if examples is not None:
        total = examples["esci_label"].value_counts().reindex(list(LABELS), fill_value=0)
        share = counts.sum(axis=1) / total.clip(lower=1)
        axes[1].bar(LABELS, share.to_numpy(), color="tab:orange")
        axes[1].set_title("flagged share of each class")
        axes[1].set_xlabel("given label")
        axes[1].set_ylabel("share of the class's examples")
    axes[-1].hist(flags["quality"].to_numpy(dtype=float), bins=np.linspace(0, 1, 21), color="tab:grey")
    axes[-1].set_title("label quality of flagged examples")
    axes[-1].set_xlabel("cleanlab label-quality score")
    axes[-1].set_ylabel("flagged examples")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def flagged_examples(flags: pd.DataFrame, examples: pd.DataFrame, products: pd.DataFrame | None = None,
                     n: int | None = None, title_chars: int = 70) -> pd.DataFrame:
    """Flagged rows, least trustworthy label first, with their query and product title."""
    _check_columns(flags, FLAG_COLUMNS, "flagged_examples")
    rows = flags[FLAG_COLUMNS].merge(
        examples[["example_id", "query", "product_id", "product_locale"]], on="example_id", how="left")
    if products is not None:
        rows = rows.merge(products[["product_id", "product_locale", "product_title"]],
                          on=["product_id", "product_locale"], how="left")
        rows["product_title"] = rows["product_title"].fillna("").str.slice(0, title_chars)
    rows = rows.sort_values(["quality", "example_id"], kind="mergesort")
    return (rows.head(n) if n else rows).rename(columns={"product_locale": "locale"}).reset_index(drop=True)


# --- readable tables ---------------------------------------------------------------------------

def styled(table: pd.DataFrame, label: str | None = "label", predicted: str | None = "predicted",
           precision: int = 2):
    """A pandas Styler for notebooks: floats rounded, index hidden, and rows where ``predicted``
    differs from ``label`` tinted, so the misses of a long table stand out."""
    style = table.style.format(precision=precision).hide(axis="index")
    if label in table.columns and predicted in table.columns:
        miss = table[label] != table[predicted]
        style = style.apply(lambda row: ["background-color: #fde0dd" if miss[row.name] else ""] * len(row),
                            axis=1)
    return style
