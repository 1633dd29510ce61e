"""Training and inference of one QU model, as a recipe of the fine-tuning loop (finetune/train.py).

The loop (``finetune.train.run_loop``) owns Accelerate, the schedule, checkpoints and resume,
best-weights selection and the progress record; this module says what a QU model trains on:

* the schedule is MT-DNN's: every mini-batch holds one task's queries and updates that task's loss
  (+ the ListNet entity loss under EAMT); an epoch is every task's batches shuffled together, the
  NER batches ``ner_oversample`` times;
* with ``joint_intent`` (Target) each NER batch gets a second, separate forward/backward pass for
  the per-token intent loss, through its own optimizer at ``learning_rate * intent_lr_factor``;
* the best epoch is picked on the validation slice by ALL macro-F1 (mean of the task F1s), ties
  broken by the mean task loss;
* predictions are padded arrays (``predict``), so the loop can store them; ``unpad`` gives back
  one array per query.

QUConfig has no EMA, accumulation or step-wise checkpoint settings: ``LoopConfig.of`` gives them
the loop's defaults (off; a checkpoint and an evaluation at each epoch end).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from transformers import get_scheduler

from finetune.train import Recipe
from query_understanding.batches import SENTENCE_TASKS, Collator, labelled_rows
from query_understanding.losses import listnet_loss, multilabel_bce, token_bce, token_cross_entropy

PADDED_TASKS = ("ner", "tw", "intent")  # per word: stored padded to the longest query, with n_words


def task_loss(task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task in SENTENCE_TASKS:
        return multilabel_bce(logits, target)
    if task == "ner":
        return token_cross_entropy(logits, target)
    return token_bce(logits, target)


def make_optimizer(model, cfg, exclude_heads: tuple[str, ...] = (), scale: float = 1.0):
    """AdamW: encoder at learning_rate, the rest at head_learning_rate, both times ``scale``;
    no weight decay on biases and LayerNorms; heads in ``exclude_heads`` left out."""
    head = {id(p) for p in model.head_parameters(exclude_heads)}
    skip = tuple(f"heads.{t}." for t in exclude_heads)
    groups = {}
    for name, p in model.named_parameters():
        if name.startswith(skip):
            continue
        decay = p.ndim > 1  # biases and LayerNorm weights are the 1-d parameters
        lr = (cfg.head_learning_rate if id(p) in head else cfg.learning_rate) * scale
        groups.setdefault((lr, decay), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": cfg.weight_decay if d else 0.0}
                              for (lr, d), ps in groups.items()])


def epoch_batches(rows_by_task: dict[str, np.ndarray], batch_size: int, ner_oversample: int,
                  gen: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(task, rows) mini-batches of one epoch, every task's batches shuffled together. Oversampling
    balances tasks against each other, so a single-task model is not oversampled."""
    out = []
    for task, rows in rows_by_task.items():
        for _ in range(ner_oversample if task == "ner" and len(rows_by_task) > 1 else 1):
            order = gen.permutation(rows)
            out += [(task, order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    return [out[i] for i in gen.permutation(len(out))]


class QURecipe(Recipe):
    """One QU model for the loop: ``rows_by_task`` train, ``valid_rows`` pick the epoch (scored by
    ``judge(rows, unpadded outputs) -> metrics``), ``predict_rows`` are predicted.

    Validation and prediction run whole on every process (QU models are small): all processes
    take the same decisions without a gather."""

    def __init__(self, collator: Collator, rows_by_task: dict[str, np.ndarray], cfg, valid_rows: np.ndarray,
                 predict_rows: np.ndarray, judge: Callable[[np.ndarray, dict], dict]):
        self.collator, self.cfg, self.judge = collator, cfg, judge
        self.rows_by_task = {t: r for t, r in rows_by_task.items() if len(r)}
        self.valid_rows, self.predict_rows, self.seed = valid_rows, predict_rows, cfg.seed
        self.joint = cfg.joint_intent and "ner" in self.rows_by_task
        self.listnet = False
        self.intent_opt = self.intent_sched = None

    # --- training
    def _epoch(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        cfg = self.cfg
        return epoch_batches(self.rows_by_task, cfg.batch_size, cfg.ner_oversample,
                             np.random.default_rng([cfg.seed, epoch]))

    def batches_per_epoch(self) -> int:
        return len(self._epoch(0))

    def batches(self, epoch: int) -> DataLoader:
        items = self._epoch(epoch)
        # One (task, rows) item per batch; its own generator keeps torch's global RNG untouched.
        return DataLoader(items, batch_sampler=BatchSampler(SequentialSampler(items), 1, drop_last=False),
                          collate_fn=self._collate, generator=torch.Generator().manual_seed(self.seed))

    def _collate(self, items) -> dict:
        (task, rows), = items
        batch = self.collator(rows, task)
        if self.joint and task == "ner":
            batch["intent_target"] = self.collator.targets(rows, "intent", batch["word_mask"])
        return batch

    def optimizer(self, model) -> torch.optim.Optimizer:
        joint = self.joint and "intent" in model.tasks
        return make_optimizer(model, self.cfg, exclude_heads=("intent",) if joint else ())

    def prepare(self, model, accelerator) -> None:
        unwrapped = accelerator.unwrap_model(model)
        self.listnet = unwrapped.fusion is not None and self.cfg.listnet
        self.joint = self.joint and "intent" in unwrapped.tasks
        if not self.joint:
            return
        cfg = self.cfg
        total = max(1, sum(t == "ner" for t, _ in self._epoch(0)) * cfg.epochs)
        opt = make_optimizer(unwrapped, cfg, exclude_heads=("ner",), scale=cfg.intent_lr_factor)
        sched = get_scheduler(cfg.scheduler, opt, num_training_steps=total,
                              num_warmup_steps=int(cfg.warmup_ratio * total))
        self.intent_opt, self.intent_sched = accelerator.prepare(opt, sched)

    def _clip(self, model, accelerator) -> None:
        if self.cfg.max_grad_norm and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), self.cfg.max_grad_norm)

    def step(self, model, batch, accelerator) -> float:
        task = batch["task"]
        out = model(batch, [task])
        loss = task_loss(task, out[task], batch["target"])
        if self.listnet:
            loss = loss + self.cfg.listnet_weight * listnet_loss(out["entity_scores"], batch["entity_gain"],
                                                                 out["entity_mask"])
        accelerator.backward(loss)
        self._clip(model, accelerator)
        return float(loss.detach())

    def after_step(self, model, batch, accelerator) -> None:
        if not (self.joint and batch["task"] == "ner"):
            return
        # Target: a second, separate forward/backward pass for the per-token intent loss.
        loss = task_loss("intent", model(batch, ["intent"])["intent"], batch["intent_target"])
        accelerator.backward(loss)
        self._clip(model, accelerator)
        self.intent_opt.step()
        self.intent_sched.step()
        self.intent_opt.zero_grad(set_to_none=True)

    # --- validation and prediction
    def evaluate(self, model, accelerator):
        if not len(self.valid_rows):
            return None
        metrics = self.judge(self.valid_rows, unpad(predict(model, self.collator, self.valid_rows,
                                                            device=accelerator.device)))
        metrics["log_loss"] = self.valid_loss(model, accelerator.device)
        return metrics.get("all_macro_f1", 0.0), metrics["log_loss"], metrics

    @torch.no_grad()
    def valid_loss(self, model, device, batch_size: int = 128) -> float:
        """Mean over the model's tasks of the task loss on the validation rows labelled for it."""
        was_training = model.training
        model.eval()
        labels = self.collator.data.labels
        losses = []
        for task in model.tasks:
            rows = np.intersect1d(labelled_rows(labels, task), self.valid_rows)
            total = 0.0
            for i in range(0, len(rows), batch_size):
                chunk = rows[i:i + batch_size]
                batch = send_to_device(self.collator(chunk, task), device)
                total += float(task_loss(task, model(batch, [task])[task], batch["target"])) * len(chunk)
            if len(rows) and np.isfinite(total):
                losses.append(total / len(rows))
        model.train(was_training)
        return float(np.mean(losses)) if losses else 0.0

    def predict(self, model, accelerator, record) -> dict[str, np.ndarray]:
        return predict(model, self.collator, self.predict_rows, device=accelerator.device)


@torch.no_grad()
def predict(model, collator: Collator, rows: np.ndarray, batch_size: int = 128, device=None) -> dict:
    """Per-query outputs aligned with ``rows``: pt, qc (n, clusters) probabilities; ner (n, W, tags)
    and tw, intent (n, W) probabilities, W the most words of a query, with n_words (n,): words past
    a query's n_words are padding. Words cut off by max_length are predicted O / 0."""
    was_training = model.training
    model.eval()
    n_words = np.array([len(collator.data.word_pos[r]) for r in rows], dtype=np.int64)
    width = int(n_words.max(initial=1))
    out: dict[str, list] = {}
    for i in range(0, len(rows), batch_size):
        batch = collator(rows[i:i + batch_size])
        if device is not None:
            batch = send_to_device(batch, device)
        cut = ~batch["word_mask"]
        for task, z in model(batch).items():
            if task in ("entity_scores", "entity_mask"):
                continue
            if task in SENTENCE_TASKS:
                p = torch.sigmoid(z.float())
            else:
                if task == "ner":
                    p = torch.softmax(z.float(), -1)
                    p[cut] = torch.nn.functional.one_hot(torch.tensor(0), p.shape[-1]).to(p)
                else:
                    p = torch.sigmoid(z.float()).masked_fill(cut, 0.0)
                pad = [0, 0] * (p.ndim - 2) + [0, width - p.shape[1]]
                p = torch.nn.functional.pad(p, pad)
            out.setdefault(task, []).append(p.cpu().numpy())
    model.train(was_training)
    return {t: np.concatenate(v) for t, v in out.items()} | {"n_words": n_words}


def unpad(outputs: dict) -> dict:
    """``predict``'s arrays -> pt, qc arrays as they are; ner, tw, intent one (words, ...) array per query."""
    n_words = outputs["n_words"]
    return {t: ([v[j, :n] for j, n in enumerate(n_words)] if t in PADDED_TASKS else v)
            for t, v in outputs.items() if t != "n_words"}
