"""Planted-noise check of confident learning: flip a share of the training labels with a seed,
get out-of-fold probabilities from a model trained on the noisy labels, and measure how many of
the flipped rows cleanlab flags.

    python -m finetune.planted_noise --run sample [--model lgbm|xenc] [--rate 0.05] [--seed 0]

``lgbm``: LightGBM on the lexical features (seconds). ``xenc`` adds the fine-tuning stage's
cross-encoder with the preset's finetune section (a k-fold training on the noisy labels).
Two controls sit beside them: class-prior probabilities (label rarity alone) and in-sample
LightGBM probabilities (a model that has seen the rows it scores memorises their flipped
labels). The table goes to ``runs/<run>/cleanlab/planted_noise_<model>.md``.
"""
from __future__ import annotations

import argparse
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd

from esci.artifacts import LABELS, PROB_COLUMNS, TEST_FOLD, RunPaths, write_text
from finetune.batches import label_indices
from finetune.confident import flag_label_issues


def plant_noise(labels: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped mask): ``rate`` of the rows get a different label, uniformly drawn."""
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(labels)))
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(len(labels), n_flip, replace=False)] = True
    noisy = labels.copy()
    shift = rng.integers(1, len(LABELS), size=n_flip)  # 1..K-1: never the same label
    noisy[flipped] = (labels[flipped] + shift) % len(LABELS)
    return noisy, flipped


def detection_scores(flagged: np.ndarray, flipped: np.ndarray) -> dict:
    """Precision/recall of ``flagged`` (row indices) at finding ``flipped`` (mask)."""
    hit = flipped[flagged].sum()
    return {"n_rows": len(flipped), "n_flipped": int(flipped.sum()), "n_flagged": len(flagged),
            "flip_rate": float(flipped.mean()), "flagged_share": len(flagged) / len(flipped),
            "precision": float(hit / max(len(flagged), 1)), "recall": float(hit / max(flipped.sum(), 1))}


def lgbm_oof_probs(features: pd.DataFrame, labels: np.ndarray, folds: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold class probabilities (n, 4) of LightGBM trained per fold on ``labels``."""
    probs = np.zeros((len(labels), len(LABELS)))
    for k in np.unique(folds):
        train, held = folds != k, folds == k
        clf = lgb.LGBMClassifier(objective="multiclass", n_estimators=200, learning_rate=0.05,
                                 num_leaves=15, min_child_samples=10, random_state=seed,
                                 deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1)
        clf.fit(features[train], labels[train])
        probs[np.ix_(held, clf.classes_)] = clf.predict_proba(features[held])
    return probs


def prior_probs(labels: np.ndarray) -> np.ndarray:
    """The know-nothing control: every row gets the label frequencies. Flips mostly turn the
    common E into a rarer label, so label rarity alone already finds some of them."""
    freq = np.bincount(labels, minlength=len(LABELS)) / len(labels)
    return np.tile(freq, (len(labels), 1))


def lgbm_in_sample_probs(features: pd.DataFrame, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The wrong way, as a control: probabilities of a model that trained on the rows it scores."""
    clf = lgb.LGBMClassifier(objective="multiclass", n_estimators=200, learning_rate=0.05, num_leaves=15,
                             min_child_samples=10, random_state=seed, deterministic=True,
                             force_row_wise=True, n_jobs=1, verbose=-1).fit(features, labels)
    probs = np.zeros((len(labels), len(LABELS)))
    probs[:, clf.classes_] = clf.predict_proba(features)
    return probs


def score_sources(noisy: np.ndarray, flipped: np.ndarray, sources: dict, rate: float) -> list[dict]:
    """One row per (probability source, selection rule): cleanlab's own count, and the lowest
    label quality at the flip rate (so precision equals recall)."""
    rows = []
    for name, probs in sources.items():
        for rule, fraction in (("cleanlab count", 0.0), (f"lowest {rate:.0%}", rate)):
            flagged, _ = flag_label_issues(noisy, probs, fraction=fraction)
            rows.append({"probabilities": name, "selection": rule, **detection_scores(flagged, flipped)})
    return rows


def _lexical_inputs(paths: RunPaths) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, folds, example ids) of the training rows."""
    from baseline.lexical_features import build_lexical_features
    examples = pd.read_parquet(paths.examples)
    folds = pd.read_parquet(paths.folds)
    feature_file = paths.features_dir / "lexical.parquet"
    features = (pd.read_parquet(feature_file) if feature_file.is_file()
                else build_lexical_features(examples, pd.read_parquet(paths.root / "products.parquet")))
    df = examples.merge(folds[["example_id", "fold"]], on="example_id").merge(features, on="example_id")
    df = df[df["fold"] != TEST_FOLD].reset_index(drop=True)
    x = df[[c for c in features.columns if c != "example_id"]]
    return x, label_indices(df["esci_label"]), df["fold"].to_numpy(), df["example_id"].to_numpy()


def to_markdown(rows: list[dict]) -> str:
    head = ("| probabilities | selection | flagged | precision | recall | recall / share flagged |\n"
            "|---|---|---|---|---|---|\n")
    lines = [f"| {r['probabilities']} | {r['selection']} | {r['n_flagged']} | {r['precision']:.3f} | "
             f"{r['recall']:.3f} | {r['recall'] / max(r['flagged_share'], 1e-12):.1f}x |" for r in rows]
    return head + "\n".join(lines) + ("\n\nA random flagger has precision = flip rate and recall = share "
                                       "flagged (last column 1.0x).\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="sample")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--config", default="configs/default.yaml", help="preset whose finetune section xenc uses")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--model", choices=["lgbm", "xenc"], default="lgbm")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = RunPaths(args.runs_dir, args.run)
    if not paths.examples.is_file():
        print(f"error: {paths.examples} missing: run the pipeline for run {args.run!r} first", file=sys.stderr)
        return 2
    labels, sources_of, extra = _sources(paths, args)
    noisy, flipped = plant_noise(labels, args.rate, args.seed)
    rows = score_sources(noisy, flipped, sources_of(noisy), args.rate)
    table = to_markdown(rows)
    out = paths.root / "cleanlab" / f"planted_noise_{args.model}.md"
    write_text(f"Planted noise: {args.rate:.0%} of the {len(labels)} training labels of run "
               f"{args.run!r} flipped to another label at random (seed {args.seed}).{extra}\n\n" + table, out)
    print(out.read_text())
    return 0


def _sources(paths: RunPaths, args):
    """(clean labels of the training rows, noisy labels -> {name: probabilities}, note)."""
    x, labels, folds, ids = _lexical_inputs(paths)

    def lexical(noisy):
        return {"LightGBM lexical, out-of-fold": lgbm_oof_probs(x, noisy, folds, args.seed),
                "LightGBM lexical, in-sample (wrong)": lgbm_in_sample_probs(x, noisy, args.seed),
                "class prior (control)": prior_probs(noisy)}
    if args.model == "lgbm":
        return labels, lexical, ""
    from esci.config import load_config
    from finetune.kfold import prepare_inputs, run_kfold
    cfg = load_config(args.config, [f"run={args.run}", f"runs_dir={args.runs_dir}", *args.overrides])
    prep = prepare_inputs(cfg.finetune, cfg.data, paths.root, pd.read_parquet(paths.examples),
                          pd.read_parquet(paths.root / "products.parquet"), pd.read_parquet(paths.folds))
    row_of = pd.Series(np.arange(len(prep.frame)), index=prep.frame["example_id"])[ids].to_numpy()

    def with_xenc(noisy):
        all_labels = prep.labels.copy()
        all_labels[row_of] = noisy
        oof, _ = run_kfold(prep, cfg.finetune, paths.root / "finetune" / f"planted_noise_{args.seed}",
                           labels=all_labels)
        probs = oof.set_index("example_id").loc[ids, PROB_COLUMNS].to_numpy()
        return {"cross-encoder, out-of-fold": probs, **lexical(noisy)}
    note = f" Cross-encoder: {cfg.finetune.backbone}, max_length {cfg.finetune.max_length}, {cfg.finetune.epochs} epoch(s)."
    return labels, with_xenc, note


if __name__ == "__main__":
    sys.exit(main())
