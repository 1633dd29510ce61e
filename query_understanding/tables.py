"""The papers' tables on a run's real data, as mean ± std over outer folds.

    python -m query_understanding.tables --run NAME [--config configs/qu_default.yaml] [--set key=value ...]

Writes ``runs/<run>/query_understanding/tables/``: ``tables.md`` (every table and the setting it
was measured under), one CSV per table, ``results.jsonl`` (per variant and fold metrics; a rerun
reuses the lines whose variant config is unchanged) and ``config.yaml``.

* Table 3: single-task models vs MTDNN vs EAMT-MTDNN, per task + ALL micro / macro, beside the
  trivial "prior" (training label frequencies: top cluster, TW all 1, no entity).
* Table 4: EAMT vs its base for MTDNN, MMoE, PLE.
* Table 5: EAMT-MTDNN with vs without ListNet, per entity_num.
* Table 6: EAMT-MTDNN at each entity_num vs MTDNN.
* Table 7: EAMT-MTDNN vs single-task models, NER oversampling off / on.
* Target Table 1: NER-only vs joint intent + NER, BRAND precision / recall / F1, argmax and with
  the per-token threshold tuned on the validation slice.

Differences are paired by fold (same held-out queries) and shown in F1 points as mean ± std of the
per-fold differences; "rel %" is the paper's relative improvement of the fold means.
Tables 3-7 keep NER labels on ``paper_ner_fraction`` of the training queries (the paper's NER set
is a seventh of its queries) and oversample NER ``table_oversample`` times in the multi-task
models; the Target table uses every NER label (``ner_label_fraction``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from esci.artifacts import RunPaths, write_csv, write_text
from esci.config import fingerprint
from query_understanding.config import TASKS, QUConfig
from query_understanding.cv import TASK_F1, learned_settings, model_dir, prior_metrics, run_fold
from query_understanding.inputs import prepare
from query_understanding.settings import SECTION, check_config, load_qu_config, read_run

ALL = ("all_micro_f1", "all_macro_f1")
TASK_LABEL = {"pt": "PT", "qc": "QC", "ner": "NER", "tw": "TW"}
COLUMNS = [("PT", "pt_micro_f1"), ("QC", "qc_micro_f1"), ("NER", "ner_f1"), ("TW", "tw_f1"),
           ("Micro", "all_micro_f1"), ("Macro", "all_macro_f1")]


def variants(cfg: QUConfig) -> dict[str, QUConfig]:
    """Every model the tables need, as overrides of ``cfg``."""
    paper = dict(ner_label_fraction=cfg.paper_ner_fraction, ner_oversample=cfg.table_oversample,
                 joint_intent=False, tasks=list(TASKS), body="mtdnn", entity_aware=False)
    eamt = dict(paper, entity_aware=True, listnet=True, entity_num=cfg.entity_num)
    v = {f"single_{t}": dict(paper, tasks=[t]) for t in TASKS}
    v.update({"mtdnn": paper, "mmoe": dict(paper, body="mmoe"), "ple": dict(paper, body="ple"),
              "eamt_mtdnn": eamt, "eamt_mmoe": dict(eamt, body="mmoe"), "eamt_ple": dict(eamt, body="ple"),
              "eamt_mtdnn_no_oversample": dict(eamt, ner_oversample=1)})
    for k in cfg.table_entity_nums:
        v[f"eamt_mtdnn_k{k}"] = dict(eamt, entity_num=k)
        v[f"eamt_mtdnn_k{k}_no_listnet"] = dict(eamt, entity_num=k, listnet=False)
    v["ner_only"] = dict(tasks=["ner"], joint_intent=False, entity_aware=False, body="mtdnn")
    v["joint_intent_ner"] = dict(v["ner_only"], joint_intent=True)
    return {name: check_config(dataclasses.replace(cfg, **over)) for name, over in v.items()}


def _finished(results_path: Path) -> dict:
    done = {}
    if results_path.is_file():
        for line in results_path.read_text().splitlines():
            rec = json.loads(line)
            done[(rec["fold"], rec["fingerprint"])] = rec
    return done


def run_variants(data, cfg: QUConfig, folds: list[int], results_path: Path, names=None,
                 models_dir: Path | None = None) -> pd.DataFrame:
    """Metrics per (variant, fold). A model whose fold and variant config are already in
    ``results_path`` is read back, not trained: reruns resume, and several processes may share
    the file (each on its own folds: ``--folds``), since it is read again before every model.
    The loop keeps each model under ``models_dir`` (default: beside ``results_path``), where a
    killed model resumes."""
    models_dir = Path(models_dir) if models_dir is not None else results_path.parent / "models"
    todo = variants(cfg)
    if names is not None:
        todo = {n: c for n, c in todo.items() if n in names}
    records = []
    for fold in folds:
        for name, vcfg in todo.items():
            fp = fingerprint(learned_settings(vcfg))
            rec = _finished(results_path).get((fold, fp))  # same config under another name: trained once
            if rec is None:
                start = time.time()
                result = run_fold(data, vcfg, fold, model_dir(models_dir, data, vcfg, fold), desc=name)
                rec = {"variant": name, "fold": fold, "fingerprint": fp, "metrics": result.metrics,
                       "seconds": round(time.time() - start, 1)}
                results_path.parent.mkdir(parents=True, exist_ok=True)
                with open(results_path, "a") as fh:  # one short line per finished model
                    fh.write(json.dumps(rec) + "\n")
                print(f"[qu tables] fold {fold} {name}: {rec['seconds']}s "
                      f"all_macro_f1={result.metrics.get('all_macro_f1', float('nan')):.3f}", flush=True)
            records.append({"variant": name, "fold": fold, **rec["metrics"]})
    return pd.DataFrame(records)


def _single_task(frame: pd.DataFrame) -> pd.DataFrame:
    """The four single-task models' metrics of each fold as one row, with ALL micro / macro."""
    rows = []
    for fold, g in frame[frame["variant"].str.startswith("single_")].groupby("fold"):
        m = {"variant": "single", "fold": fold}
        for _, r in g.iterrows():
            task = r["variant"].removeprefix("single_")
            m[TASK_F1[task]], m[f"n_{task}"] = r[TASK_F1[task]], r[f"n_{task}"]
            for extra in ("pt_macro_f1", "qc_macro_f1", "ner_precision", "ner_recall"):
                if extra.startswith(task) and extra in r:
                    m[extra] = r[extra]
        f1s = np.array([m[TASK_F1[t]] for t in TASKS if TASK_F1[t] in m])
        sizes = np.array([m[f"n_{t}"] for t in TASKS if TASK_F1[t] in m], dtype=float)
        m["all_macro_f1"], m["all_micro_f1"] = float(f1s.mean()), float((f1s * sizes).sum() / sizes.sum())
        rows.append(m)
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def _values(frame, variant, metric) -> pd.Series:
    g = frame[frame["variant"] == variant].set_index("fold")
    return g[metric].astype(float) if metric in g else pd.Series(dtype=float)


def fmt_abs(v: pd.Series) -> str:
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else (f"{v.mean():.3f}" if len(v) else "")


def fmt_delta(frame, variant, base, metric) -> str:
    a, b = _values(frame, variant, metric), _values(frame, base, metric)
    d = (a - b).dropna() * 100
    if not len(d):
        return ""
    paired = d.index
    base_mean = b.loc[paired].mean()
    rel = f"{100 * (a.loc[paired].mean() - base_mean) / base_mean:+.1f}%" if base_mean else "n/a"
    spread = f" ± {d.std(ddof=1):.1f}" if len(d) > 1 else ""
    return f"{d.mean():+.1f}{spread} ({rel})"


def table3(frame) -> pd.DataFrame:
    rows = []
    for label, metric in COLUMNS:
        rows.append({"task": label, "prior": fmt_abs(_values(frame, "prior", metric)),
                     "single": fmt_abs(_values(frame, "single", metric)),
                     "MTDNN": fmt_abs(_values(frame, "mtdnn", metric)),
                     "EAMT_mtdnn": fmt_abs(_values(frame, "eamt_mtdnn", metric)),
                     "MTDNN vs single": fmt_delta(frame, "mtdnn", "single", metric),
                     "EAMT_mtdnn vs single": fmt_delta(frame, "eamt_mtdnn", "single", metric)})
    return pd.DataFrame(rows)


def _delta_rows(frame, pairs: list[tuple[str, str, str]], columns=COLUMNS) -> pd.DataFrame:
    return pd.DataFrame([{"model": label, **{c: fmt_delta(frame, v, b, m) for c, m in columns}}
                         for label, v, b in pairs])


def table4(frame) -> pd.DataFrame:
    return _delta_rows(frame, [(f"EAMT_{b} vs {b.upper()}", f"eamt_{b}", b) for b in ("mtdnn", "mmoe", "ple")])


def table5(frame, cfg) -> pd.DataFrame:
    return _delta_rows(frame, [(f"entity_num={k}", f"eamt_mtdnn_k{k}", f"eamt_mtdnn_k{k}_no_listnet")
                               for k in cfg.table_entity_nums], [c for c in COLUMNS if c[1] in ALL])


def table6(frame, cfg) -> pd.DataFrame:
    return _delta_rows(frame, [(f"entity_num={k}", f"eamt_mtdnn_k{k}", "mtdnn") for k in cfg.table_entity_nums])


def table7(frame) -> pd.DataFrame:
    return _delta_rows(frame, [("oversample No", "eamt_mtdnn_no_oversample", "single"),
                               ("oversample Yes", "eamt_mtdnn", "single")])


def target_table(frame) -> pd.DataFrame:
    prf = ("precision", "recall", "f1")
    rows = []
    for label, variant in (("NER-only", "ner_only"), ("joint intent + NER", "joint_intent_ner")):
        for decoding, prefix in (("argmax", "brand_"), ("tuned threshold", "brand_gated_")):
            tau = fmt_abs(_values(frame, variant, "gate_tau")) if prefix == "brand_gated_" else ""
            rows.append({"model": label, "decoding": decoding,
                         **{k: fmt_abs(_values(frame, variant, prefix + k)) for k in prf}, "threshold": tau})
    rows.append({"model": "joint intent + NER", "decoding": "query intent (mean token prob >= 0.5)",
                 **{k: fmt_abs(_values(frame, "joint_intent_ner", f"intent_{k}")) for k in prf}, "threshold": ""})
    return pd.DataFrame(rows)


def table_all(frame) -> pd.DataFrame:
    metrics = [c for c in frame.columns if c not in ("variant", "fold") and not c.startswith("n_")]
    out = []
    for variant, g in frame.groupby("variant", sort=False):
        out.append({"variant": variant, "folds": g["fold"].nunique(),
                    **{m: fmt_abs(g[m].dropna().astype(float)) for m in metrics if g[m].notna().any()}})
    return pd.DataFrame(out)


TABLES = [  # file name, title, builder(frame, cfg)
    ("table3_single_vs_mtdnn_vs_eamt", "Table 3 analogue: single-task vs MTDNN vs EAMT-MTDNN (F1)",
     lambda f, c: table3(f)),
    ("table4_eamt_vs_base", "Table 4 analogue: EAMT over its base multi-task model (Δ F1 points)",
     lambda f, c: table4(f)),
    ("table5_listnet", "Table 5 analogue: EAMT-MTDNN with ListNet over without (Δ F1 points)", table5),
    ("table6_entity_num", "Table 6 analogue: EAMT-MTDNN (ListNet) at each entity_num over MTDNN (Δ F1 points)",
     table6),
    ("table7_oversampling",
     "Table 7 analogue: EAMT-MTDNN over single-task models, NER oversampling off / on (Δ F1 points)",
     lambda f, c: table7(f)),
    ("target_table1_joint_intent_ner", "Target Table 1 analogue: BRAND entities, NER-only vs joint intent + NER",
     lambda f, c: target_table(f)),
    ("all_variants_absolute", "Every variant, absolute metrics (mean ± std over folds)", lambda f, c: table_all(f)),
]


def _md(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def setting_text(cfg: QUConfig, data, folds: list[int]) -> str:
    n_train = int((data.labels["fold"] >= 0).sum())
    return (f"Setting: backbone `{cfg.backbone}` (scratch: hidden {cfg.scratch_hidden}, {cfg.scratch_layers} "
            f"layers), max_length {cfg.max_length}, entity_max_length {cfg.entity_max_length}, entity_grad "
            f"{cfg.entity_grad}, {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.learning_rate} / heads "
            f"{cfg.head_learning_rate}, seed {cfg.seed}; outer folds {folds} of the run; {n_train} training "
            f"queries; PT {data.clusters.n_pt} / QC {data.clusters.n_qc} title clusters; weak labels of "
            f"query_understanding/weak_labels.py. Tables 3-7: NER labels on {cfg.paper_ner_fraction:.0%} of the "
            f"training queries, NER oversampled x{cfg.table_oversample} in the multi-task models; Target table: "
            f"NER labels on {cfg.ner_label_fraction:.0%}. Δ = paired per-fold difference in F1 points, "
            f"mean ± std (relative % of the fold means).")


def write_tables(frame: pd.DataFrame, cfg: QUConfig, data, folds: list[int], out_dir: Path) -> Path:
    frame = _single_task(frame)
    parts = ["# Query understanding tables", "", setting_text(cfg, data, folds), ""]
    for name, title, build in TABLES:
        df = build(frame, cfg)
        write_csv(df, out_dir / f"{name}.csv")
        parts += [f"## {title}", "", _md(df), ""]
    md = out_dir / "tables.md"
    write_text("\n".join(parts), md)
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Query-understanding tables (Walmart EAMT, Target intent + NER).")
    ap.add_argument("--run", required=True, help="a prepared run: runs/<run>/examples.parquet etc.")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--config", default="configs/qu_default.yaml",
                    help="preset with a query_understanding section")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--variants", help="comma-separated subset of variants to train (tables need them all)")
    ap.add_argument("--folds", help="comma-separated outer folds to run (default: the first table_folds)")
    args = ap.parse_args(argv)
    try:
        cfg = load_qu_config(args.config, args.overrides)
        paths = RunPaths(args.runs_dir, args.run)
        examples, products, folds_df = read_run(paths)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = paths.root / "query_understanding" / "tables"
    data = prepare(examples, products, folds_df, cfg, paths.root)
    all_folds = sorted(int(f) for f in data.labels["fold"].unique() if f >= 0)
    folds = all_folds[:cfg.table_folds] if cfg.table_folds else all_folds
    if args.folds:
        folds = [int(f) for f in args.folds.split(",")]
        if not set(folds) <= set(all_folds):
            print(f"error: --folds {folds} not among the run's folds {all_folds}", file=sys.stderr)
            return 2
    write_text(yaml.safe_dump({SECTION: dataclasses.asdict(cfg)}, sort_keys=False), out_dir / "config.yaml")
    names = set(args.variants.split(",")) if args.variants else None
    frame = run_variants(data, cfg, folds, out_dir / "results.jsonl", names,
                         models_dir=paths.root / "query_understanding" / "models")
    prior = pd.DataFrame([{"variant": "prior", "fold": f, **prior_metrics(data, cfg, f)} for f in folds])
    frame = pd.concat([prior, frame], ignore_index=True)
    md = write_tables(frame, cfg, data, folds, out_dir)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
