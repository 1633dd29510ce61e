"""Inference of a CrossEncoder over rows, and the validation metrics used to pick checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from accelerate.utils import gather_object, send_to_device

from esci.metrics import gains_of, ndcg, task2_scores, task3_scores
from esci.artifacts import GAINS, LABELS, PROB_COLUMNS
from finetune.batches import SUBSTITUTE, PairCollator, inference_batches
from finetune.inputs import EncodedPairs

GAIN_VECTOR = np.array([GAINS[label] for label in LABELS])


@torch.inference_mode()
def predict_outputs(model, pairs: EncodedPairs, rows: np.ndarray, pad_id: int, batch_size: int,
                    device=None, length_sorted: bool = True, accelerator=None,
                    record: dict | None = None) -> dict[str, np.ndarray]:
    """Per-row outputs of every head: task2 (n, 4) probabilities, task1 (n,) gain, task3 (n,) P(sub).

    With an ``accelerator`` of several processes, each process scores every n-th batch and every
    process gets all outputs back (``record["rows_per_process"]`` says who scored how many)."""
    collate = PairCollator(pairs, pad_id)
    was_training = model.training
    model.eval()
    order, chunks = [], {}
    batches = inference_batches(rows, pairs, batch_size, length_sorted)
    if accelerator is not None and accelerator.num_processes > 1:
        # Strided over length-sorted batches: the shares match in padded tokens as well as in rows.
        batches = batches[accelerator.process_index::accelerator.num_processes]
    for batch_rows in batches:
        batch = collate(batch_rows)
        if device is not None:
            batch = send_to_device(batch, device)
        for task, z in model(batch).items():
            z = z.float()
            p = torch.softmax(z, -1) if z.shape[-1] > 1 else torch.sigmoid(z[:, 0])
            chunks.setdefault(task, []).append(p.cpu().numpy())
        order.append(batch_rows)
    model.train(was_training)
    scored = np.concatenate(order) if order else np.empty(0, dtype=np.int64)
    outputs = {task: np.concatenate(parts) for task, parts in chunks.items()}
    if accelerator is not None and accelerator.num_processes > 1:
        scored, outputs = _gather_by_row(scored, outputs, record)
    position = {r: i for i, r in enumerate(scored)}
    if len(scored) != len(rows) or position.keys() != set(rows):  # a duplicated or a lost row
        raise RuntimeError(f"predict: {len(scored)} outputs ({len(position)} distinct rows) for {len(rows)} rows")
    back = np.array([position[r] for r in rows])
    return {task: values[back] for task, values in outputs.items()}


def _gather_by_row(scored: np.ndarray, outputs: dict[str, np.ndarray], record: dict | None):
    """Every process's (rows, outputs), concatenated. Rows travel with their outputs, so nothing
    depends on padding: ``gather_for_metrics`` would instead trim by the remainder of whichever
    prepared DataLoader is active, which mid-epoch is the training loader."""
    parts = gather_object([(scored, outputs)])
    if record is not None:
        record["rows_per_process"] = [len(r) for r, _ in parts]
    parts = [p for p in parts if len(p[0])]
    return (np.concatenate([r for r, _ in parts]),
            {task: np.concatenate([o[task] for _, o in parts]) for task in parts[0][1]})


def score_and_sub(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Task-1 score (the regression head, else the 4-class expected gain) and P(substitute)."""
    score = outputs.get("task1")
    if score is None and "task2" in outputs:
        score = outputs["task2"] @ GAIN_VECTOR
    p_sub = outputs.get("task3")
    if p_sub is None and "task2" in outputs:
        p_sub = outputs["task2"][:, SUBSTITUTE]
    return score, p_sub


def prediction_columns(outputs: dict[str, np.ndarray]) -> pd.DataFrame:
    """The artifact columns of model outputs: p_E..p_I (task-2 probabilities renormalised to sum
    to exactly 1), score, and p_sub when a task-3 head exists."""
    probs = outputs["task2"].astype(float)
    probs = probs / probs.sum(axis=1, keepdims=True)
    out = pd.DataFrame(probs, columns=PROB_COLUMNS)
    score, p_sub = score_and_sub({**outputs, "task2": probs})
    out["score"] = score
    if "task3" in outputs:
        out["p_sub"] = p_sub
    return out


def valid_metrics(outputs: dict[str, np.ndarray], label_idx: np.ndarray, query_ids: np.ndarray) -> dict:
    """The competition metrics a model's heads can be judged by on labelled rows."""
    labels = np.array(LABELS)[label_idx]
    score, p_sub = score_and_sub(outputs)
    out = {}
    if score is not None:
        out["task1_ndcg"] = ndcg(query_ids, gains_of(labels), score)
        # Queries with one judged product (most of the sample) score 1 whatever the model does.
        informative = ndcg(query_ids, gains_of(labels), score, informative_only=True)
        out["task1_ndcg_informative"] = out["task1_ndcg"] if np.isnan(informative) else informative
    if "task2" in outputs:
        out["task2_micro_f1"] = task2_scores(labels, np.array(LABELS)[outputs["task2"].argmax(1)])["micro_f1"]
    if p_sub is not None:
        out["task3_micro_f1"] = task3_scores(labels == "S", p_sub >= 0.5)["micro_f1"]
    out["log_loss"] = heads_log_loss(outputs, label_idx)
    return out


def heads_log_loss(outputs: dict[str, np.ndarray], label_idx: np.ndarray) -> float:
    """Mean over the heads of their cross-entropy against the targets the loss trains on."""
    eps = 1e-7
    losses = []
    if "task2" in outputs:
        losses.append(-np.log(np.clip(outputs["task2"][np.arange(len(label_idx)), label_idx], eps, 1)).mean())
    for task, target in (("task1", GAIN_VECTOR[label_idx]), ("task3", (label_idx == SUBSTITUTE).astype(float))):
        if task in outputs:
            p = np.clip(outputs[task], eps, 1 - eps)
            losses.append(-(target * np.log(p) + (1 - target) * np.log(1 - p)).mean())
    return float(np.mean(losses))


HEAD_METRIC = {"task1": "task1_ndcg_informative", "task2": "task2_micro_f1", "task3": "task3_micro_f1"}


def selection_score(metrics: dict, tasks: list[str], select_metric: str) -> float:
    """The number the best checkpoint maximises: one metric, or the mean over the model's heads."""
    if select_metric == "auto":
        return float(np.mean([metrics[HEAD_METRIC[t]] for t in tasks]))
    if select_metric not in metrics:
        raise ValueError(f"config finetune.select_metric: {select_metric!r} is not available for heads {tasks}")
    return float(metrics[select_metric])


def is_better(score: float, loss: float, best_score: float, best_loss: float) -> bool:
    """Higher task metric wins; on a tie (common on small validation sets, where F1 sits at the
    majority class for many steps) the lower validation log-loss wins."""
    if not math.isclose(score, best_score, rel_tol=0, abs_tol=1e-12):
        return score > best_score
    return loss < best_loss
