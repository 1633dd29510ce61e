"""Training and inference of one QU model. TO BE MERGED into finetune/train.py's loop.

finetune.train.train_and_predict is built around (query, product) pairs: its collator, loss and
validation metrics are fixed inside it, so this module keeps a minimal loop of its own (see the
README, "Merging into the fine-tuning loop", for the general change that would let it take this
model). Backbones come from finetune.backbone, as the fine-tuning stage loads them.

The schedule is MT-DNN's: every mini-batch holds one task's queries and updates that task's loss
(+ the ListNet entity loss under EAMT); an epoch is every task's batches shuffled together, the
NER batches ``ner_oversample`` times. With ``joint_intent`` (Target) each NER batch gets a second,
separate forward/backward pass for the per-token intent loss, through its own optimizer at
``learning_rate * intent_lr_factor``.
"""
from __future__ import annotations

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from query_understanding.batches import SENTENCE_TASKS, Collator
from query_understanding.losses import listnet_loss, multilabel_bce, token_bce, token_cross_entropy


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


def train_model(build_model, collator: Collator, rows_by_task: dict[str, np.ndarray], cfg,
                desc: str = "qu") -> torch.nn.Module:
    """Train the model ``build_model()`` returns on ``rows_by_task``; returns it (on CPU) in eval mode."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    set_seed(cfg.seed)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = build_model()
    rows_by_task = {t: r for t, r in rows_by_task.items() if len(r)}
    gen = np.random.default_rng(cfg.seed)
    per_epoch = len(epoch_batches(rows_by_task, cfg.batch_size, cfg.ner_oversample, np.random.default_rng(0)))
    total = max(1, per_epoch * cfg.epochs)
    joint = cfg.joint_intent and "intent" in model.tasks and "ner" in rows_by_task
    optimizer = make_optimizer(model, cfg, exclude_heads=("intent",) if joint else ())
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total),
                              num_training_steps=total)
    intent_opt = intent_sched = None
    if joint:
        batches = epoch_batches(rows_by_task, cfg.batch_size, cfg.ner_oversample, np.random.default_rng(0))
        intent_total = max(1, sum(t == "ner" for t, _ in batches) * cfg.epochs)
        intent_opt = make_optimizer(model, cfg, exclude_heads=("ner",), scale=cfg.intent_lr_factor)
        intent_sched = get_scheduler(cfg.scheduler, intent_opt, num_training_steps=intent_total,
                                     num_warmup_steps=int(cfg.warmup_ratio * intent_total))
        model, optimizer, intent_opt = accelerator.prepare(model, optimizer, intent_opt)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    listnet = accelerator.unwrap_model(model).fusion is not None and cfg.listnet

    def step(batch, task, target, opt, sched, rank: bool = True) -> float:
        out = model(batch, [task])
        loss = task_loss(task, out[task], target)
        if listnet and rank:
            loss = loss + cfg.listnet_weight * listnet_loss(out["entity_scores"], batch["entity_gain"],
                                                            out["entity_mask"])
        accelerator.backward(loss)
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    model.train()
    bar = tqdm(total=total, desc=desc, leave=False, mininterval=5)
    for _ in range(cfg.epochs):
        for task, rows in epoch_batches(rows_by_task, cfg.batch_size, cfg.ner_oversample, gen):
            batch = send_to_device(collator(rows, task), accelerator.device)
            loss = step(batch, task, batch["target"], optimizer, scheduler)
            if joint and task == "ner":  # Target: a second, separate pass for the intent loss
                intent = collator.targets(rows, "intent", batch["word_mask"].cpu()).to(accelerator.device)
                step(batch, "intent", intent, intent_opt, intent_sched, rank=False)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    bar.close()
    model = accelerator.unwrap_model(model).cpu()
    model.eval()
    return model


@torch.no_grad()
def predict(model, collator: Collator, rows: np.ndarray, batch_size: int = 128) -> dict:
    """Per-query outputs: pt, qc (n, clusters) probabilities; ner (list of (words, tags) probs);
    tw, intent (list of (words,) probabilities). Words cut off by max_length are predicted O / 0."""
    model.eval()
    out: dict[str, list] = {}
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        batch = collator(chunk)
        logits = model(batch)
        cut = ~batch["word_mask"]
        lengths = [len(collator.data.word_pos[r]) for r in chunk]
        for task, z in logits.items():
            if task in ("entity_scores", "entity_mask"):
                continue
            if task in SENTENCE_TASKS:
                out.setdefault(task, []).append(torch.sigmoid(z).numpy())
            else:
                if task == "ner":
                    p = torch.softmax(z, -1)
                    p[cut] = torch.nn.functional.one_hot(torch.tensor(0), p.shape[-1]).to(p.dtype)
                else:
                    p = torch.sigmoid(z).masked_fill(cut, 0.0)
                p = p.numpy()
                out.setdefault(task, []).extend(p[j, :n] for j, n in enumerate(lengths))
    return {t: (np.concatenate(v) if t in SENTENCE_TASKS else v) for t, v in out.items()}
