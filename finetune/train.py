"""The one training loop: every task, head and trick of the fine-tuning stage, and the
query-understanding models, run through here.

    run_loop(build_model, recipe, cfg, out_dir) -> {name: predictions of recipe.predict_rows}
    train_and_predict(build_model, data, cfg, out_dir)  = run_loop with the cross-encoder's PairRecipe

HF Accelerate carries the loop from one CPU to several GPUs. A ``Recipe`` says what is trained:
its batches, its optimizer, one training step (forward(s) + backward(s), tricks included), an
optional extra pass after the optimizer step, the validation score and the final prediction. The
loop owns the rest: accumulation, schedule, EMA, every ``eval_every`` steps the eval model (EMA
when on) scored and the best weights kept, early stopping, ``checkpoint_every`` steps the whole
training state saved so a killed run resumes at the step it reached, and the progress record. A
fold whose ``predictions.npz`` exists is not trained again.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from esci.artifacts import atomic_path, write_json
from finetune.batches import PairCollator, train_loader
from finetune.inputs import EncodedPairs
from finetune.losses import TaskLoss
from finetune.predict import is_better, predict_outputs, selection_score, valid_metrics
from finetune.tricks.ema import make_ema
from finetune.tricks.fgm import fgm_perturbation
from finetune.tricks.mixup import sample_mix
from finetune.tricks.rdrop import RDropLoss, consistency

PREDICTIONS = "predictions.npz"


def process_state() -> PartialState:
    """This process's place among those ``accelerate launch`` started (one, without it). It reads
    ``ACCELERATE_USE_CPU`` as ``Accelerator`` does: the first caller fixes the state for the process."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


@dataclass
class FoldData:
    """Rows are indices into ``pairs``; labels are 0..3 (E/S/C/I), -1 where unknown."""

    pairs: EncodedPairs
    labels: np.ndarray
    query_ids: np.ndarray
    train_rows: np.ndarray
    valid_rows: np.ndarray
    predict_rows: np.ndarray
    pad_id: int
    weights: np.ndarray | None = None
    seed: int = 0


@dataclass
class Progress:
    """Where training stands; saved with every checkpoint."""

    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    step: int = 0  # optimizer steps
    best_score: float = -math.inf
    best_loss: float = math.inf  # validation log-loss of the best checkpoint: the tie-breaker
    best_step: int = -1
    evals_since_best: int = 0
    stopped_early: bool = False
    seconds: float = 0.0  # wall time spent training and evaluating, over all sessions
    cpu_seconds: float = 0.0  # process CPU time over the same span (all threads)
    history: list[dict] = field(default_factory=list)


@dataclass
class LoopConfig:
    """The settings the loop itself reads. ``LoopConfig.of(cfg)`` takes them by name from a stage's
    config: FinetuneConfig has every one; a config without one (QUConfig) gets the default here."""

    epochs: int = 1
    grad_accum_steps: int = 1
    mixed_precision: str = "no"
    scheduler: str = "linear"
    warmup_ratio: float = 0.0
    eval_every: int = 0  # optimizer steps between evaluations; 0 = epoch ends only
    early_stopping_patience: int = 0
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0 = epoch ends only
    ema: bool = False
    ema_decay: float = 0.999
    ema_warmup: bool = True
    keep_fold_models: bool = False
    num_threads: int = 0

    @classmethod
    def of(cls, cfg) -> "LoopConfig":
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)})


class Recipe:
    """What the loop trains, and how it is judged. Subclasses set ``seed`` and ``predict_rows``.

    ``batches(epoch)`` must be a DataLoader whose order is a function of (seed, epoch) and that
    draws nothing from the global RNG (give it its own ``generator``): that is what makes a resumed
    run bit-identical. Optimizers and schedulers a recipe adds in ``prepare`` must go through
    ``accelerator.prepare`` there, so checkpoints save and restore them."""

    seed: int
    predict_rows: np.ndarray

    def batches_per_epoch(self) -> int:
        """Micro-batches of one epoch in a single process."""
        raise NotImplementedError

    def batches(self, epoch: int):
        raise NotImplementedError

    def optimizer(self, model) -> torch.optim.Optimizer:
        raise NotImplementedError

    def prepare(self, model, accelerator: Accelerator) -> None:
        """Called once the model is prepared, before a checkpoint is loaded."""

    def step(self, model, batch, accelerator: Accelerator) -> float:
        """Forward(s) and backward(s) of one micro-batch, gradient clipping included; its loss."""
        raise NotImplementedError

    def after_step(self, model, batch, accelerator: Accelerator) -> None:
        """After each optimizer step (on its last micro-batch), before the EMA update: extra passes."""

    def evaluate(self, model, accelerator: Accelerator) -> tuple[float, float, dict] | None:
        """(score to maximise, log-loss tie-breaker, metrics) of the eval model on validation rows,
        the same on every process; None without validation rows: the newest weights are kept."""
        raise NotImplementedError

    def predict(self, model, accelerator: Accelerator, record: dict) -> dict[str, np.ndarray]:
        """Arrays aligned with ``predict_rows``; ``record["rows_per_process"]`` may say who scored what."""
        raise NotImplementedError


def _optimizer(model, cfg) -> torch.optim.Optimizer:
    head = {id(p) for p in model.head_parameters()}
    groups = {}
    for name, p in model.named_parameters():
        decay = p.ndim > 1 and "LayerNorm" not in name and "layer_norm" not in name
        lr = cfg.head_learning_rate if id(p) in head else cfg.learning_rate
        groups.setdefault((lr, decay), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": cfg.weight_decay if decay else 0.0}
                              for (lr, decay), ps in groups.items()])


class Checkpoints:
    """``checkpoints/<name>/`` (Accelerate state + EMA + progress) and ``latest.json`` pointing at
    the newest complete one: the pointer is written last, atomically, so a kill mid-save leaves
    the previous checkpoint in charge."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / "checkpoints"
        self.pointer = self.out_dir / "latest.json"

    def latest(self) -> Path | None:
        if not self.pointer.is_file():
            return None
        path = self.root / json.loads(self.pointer.read_text())["latest"]
        return path if (path / "progress.json").is_file() else None

    def save(self, accelerator: Accelerator, progress: Progress, ema) -> None:
        name = f"step{progress.step:07d}-epoch{progress.epoch}-batch{progress.batch_in_epoch}"
        path = self.root / name
        if path.exists() and accelerator.is_main_process:
            shutil.rmtree(path)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(path))
        accelerator.wait_for_everyone()  # each process writes its own RNG state into the directory
        if not accelerator.is_main_process:
            return
        if ema is not None:
            torch.save(ema.state_dict(), path / "ema.pt")
        write_json(asdict(progress), path / "progress.json")
        write_json({"latest": name}, self.pointer)
        for old in self.root.iterdir():
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, accelerator: Accelerator, ema) -> Progress:
        path = self.latest()
        accelerator.load_state(str(path))
        if ema is not None:
            ema.load_state_dict(torch.load(path / "ema.pt", weights_only=True))
        return Progress(**json.loads((path / "progress.json").read_text()))

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.pointer.unlink(missing_ok=True)


class _Clock:
    """Adds the time since the last tick to the progress record, so resumed runs sum up."""

    def __init__(self, progress: Progress):
        self.progress, self.wall, self.cpu = progress, time.perf_counter(), time.process_time()

    def tick(self) -> Progress:
        wall, cpu = time.perf_counter(), time.process_time()
        self.progress.seconds += wall - self.wall
        self.progress.cpu_seconds += cpu - self.cpu
        self.wall, self.cpu = wall, cpu
        return self.progress


def _best_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"best-step{step}.pt"


def _training_step(model, batch, cfg, loss_fn, rdrop_loss, accelerator) -> float:
    unwrapped = accelerator.unwrap_model(model)
    targets = {t: batch["targets"][t] for t in unwrapped.tasks}
    weight = batch["weight"]
    mix = None
    if cfg.mixup and torch.rand(()) < cfg.mixup_prob:
        mix = sample_mix(len(weight), cfg.mixup_alpha)
        targets, weight = mix.targets(targets), mix.apply(weight)
    logits = model(batch, mix)
    if rdrop_loss is not None:
        loss = rdrop_loss(logits, model(batch, mix), targets, weight)
    else:
        loss = loss_fn(logits, targets, weight)
    accelerator.backward(loss)
    if cfg.fgm:
        with fgm_perturbation(unwrapped, cfg.fgm_epsilon):
            adv = model(batch, mix)
            adv_loss = loss_fn(adv, targets, weight)
            if cfg.rdrop and cfg.rdrop_mode == "clean_adv":
                # The clean graph is already freed by its backward: the KL pulls only the adversarial side.
                adv_loss = adv_loss + cfg.rdrop_alpha * consistency(
                    {t: z.detach() for t, z in logits.items()}, adv)
            accelerator.backward(adv_loss)
    if accelerator.sync_gradients and cfg.max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    return float(loss.detach())


class PairRecipe(Recipe):
    """The cross-encoder on (query, product) pairs: length-grouped batches of the training rows,
    the task1/2/3 loss with mixup, R-Drop and FGM, selection by the ESCI metrics of the
    validation rows, and every head's outputs on the prediction rows (sharded and gathered)."""

    def __init__(self, data: FoldData, cfg):
        self.data, self.cfg, self.seed, self.predict_rows = data, cfg, data.seed, data.predict_rows
        self.collator = PairCollator(data.pairs, data.pad_id, data.labels, data.weights)
        self.loss_fn = TaskLoss({"task1": cfg.task1_weight, "task2": cfg.task2_weight, "task3": cfg.task3_weight},
                                cfg.poly1_epsilon, cfg.label_smoothing)
        dropout_pair = cfg.rdrop and cfg.rdrop_mode == "dropout"
        self.rdrop_loss = RDropLoss(self.loss_fn, cfg.rdrop_alpha) if dropout_pair else None

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.data.train_rows) / self.cfg.batch_size)

    def batches(self, epoch: int):
        d = self.data
        return train_loader(d.train_rows, d.pairs, self.collator, self.cfg.batch_size, d.seed, epoch)

    def optimizer(self, model) -> torch.optim.Optimizer:
        return _optimizer(model, self.cfg)

    def step(self, model, batch, accelerator) -> float:
        return _training_step(model, batch, self.cfg, self.loss_fn, self.rdrop_loss, accelerator)

    def evaluate(self, model, accelerator):
        d = self.data
        outputs = predict_outputs(model, d.pairs, d.valid_rows, d.pad_id, self.cfg.infer_batch_size,
                                  accelerator.device, accelerator=accelerator)
        metrics = valid_metrics(outputs, d.labels[d.valid_rows], d.query_ids[d.valid_rows])
        return selection_score(metrics, model.tasks, self.cfg.select_metric), metrics["log_loss"], metrics

    def predict(self, model, accelerator, record):
        d = self.data
        return predict_outputs(model, d.pairs, d.predict_rows, d.pad_id, self.cfg.infer_batch_size,
                               accelerator.device, accelerator=accelerator, record=record)


def train_and_predict(build_model: Callable[[], torch.nn.Module], data: FoldData, cfg, out_dir: Path,
                      on_step: Callable[[int], None] | None = None, desc: str = "train") -> dict[str, np.ndarray]:
    """Train the cross-encoder (or resume, or skip when finished), then predict ``data.predict_rows``
    with the best weights."""
    return run_loop(build_model, PairRecipe(data, cfg), cfg, out_dir, on_step, desc)


def run_loop(build_model: Callable[[], torch.nn.Module], recipe: Recipe, cfg, out_dir: Path,
             on_step: Callable[[int], None] | None = None, desc: str = "train") -> dict[str, np.ndarray]:
    """Train ``build_model()`` on ``recipe`` (or resume, or skip when finished) under the loop
    settings of ``cfg`` (``LoopConfig.of``), then predict ``recipe.predict_rows`` with the best weights."""
    out_dir = Path(out_dir)
    done = out_dir / PREDICTIONS
    if done.is_file():
        with np.load(done, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if k != "rows"}
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = LoopConfig.of(cfg)
    threads = torch.get_num_threads()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    try:
        return _run_loop(build_model, recipe, settings, out_dir, on_step, desc)
    finally:
        torch.set_num_threads(threads)


def _run_loop(build_model, recipe: Recipe, cfg: LoopConfig, out_dir: Path, on_step, desc: str) -> dict[str, np.ndarray]:
    done = out_dir / PREDICTIONS
    # The encoder's pooler (and a single-task member's unused parts) get no gradient: DDP must know.
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum_steps, mixed_precision=cfg.mixed_precision,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    set_seed(recipe.seed)
    model = build_model()
    tasks = model.tasks
    n_batches = recipe.batches_per_epoch()
    steps_per_epoch = math.ceil(n_batches / cfg.grad_accum_steps)
    total_steps = steps_per_epoch * cfg.epochs
    # Each of N processes takes every N-th batch; the prepared scheduler steps N times per step,
    # so it is sized in one-process steps.
    local_steps = math.ceil(math.ceil(n_batches / accelerator.num_processes) / cfg.grad_accum_steps) * cfg.epochs
    optimizer = recipe.optimizer(model)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    recipe.prepare(model, accelerator)
    ema = make_ema(accelerator.unwrap_model(model), cfg.ema_decay, cfg.ema_warmup) if cfg.ema else None
    ckpts = Checkpoints(out_dir)
    progress = ckpts.load(accelerator, ema) if ckpts.latest() else Progress()
    clock = _Clock(progress)
    for stale in out_dir.glob("best-step*.pt"):  # from a run killed after its last checkpoint
        if stale != _best_path(out_dir, progress.best_step) and accelerator.is_main_process:
            stale.unlink()

    def eval_model():
        return ema.module if ema is not None else accelerator.unwrap_model(model)

    def evaluate() -> None:
        # Every process gets the same result (the pair recipe shards and gathers), so all take the same decisions.
        result = recipe.evaluate(eval_model(), accelerator)
        score, loss, metrics = result if result is not None else (math.nan, math.nan, {})
        progress.history.append({"step": progress.step, "epoch": progress.epoch, "score": score, **metrics})
        if result is None or is_better(score, loss, progress.best_score, progress.best_loss):
            old = _best_path(out_dir, progress.best_step)
            progress.best_score, progress.best_loss = score, loss
            progress.best_step, progress.evals_since_best = progress.step, 0
            if accelerator.is_main_process:
                with atomic_path(_best_path(out_dir, progress.step)) as tmp:
                    torch.save(eval_model().state_dict(), tmp)
                if old != _best_path(out_dir, progress.step):
                    old.unlink(missing_ok=True)
        else:
            progress.evals_since_best += 1
            if cfg.early_stopping_patience and progress.evals_since_best >= cfg.early_stopping_patience:
                progress.stopped_early = True

    model.train()
    bar = tqdm(total=local_steps, initial=progress.step, desc=desc, leave=False, mininterval=5,
               disable=not accelerator.is_local_main_process)
    while progress.epoch < cfg.epochs and not progress.stopped_early:
        loader = accelerator.prepare(recipe.batches(progress.epoch))
        evaluated_at = -1
        for batch in accelerator.skip_first_batches(loader, progress.batch_in_epoch):
            with accelerator.accumulate(model):
                loss = recipe.step(model, batch, accelerator)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            progress.batch_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            recipe.after_step(model, batch, accelerator)
            progress.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if ema is not None:
                ema.update_parameters(accelerator.unwrap_model(model))
            if cfg.eval_every and progress.step % cfg.eval_every == 0:
                evaluate()
                evaluated_at = progress.step
            if progress.stopped_early:
                break
            if cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0:
                ckpts.save(accelerator, clock.tick(), ema)
            if on_step is not None:
                on_step(progress.step)
        if not progress.stopped_early:
            if evaluated_at != progress.step:
                evaluate()
            progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
            if progress.epoch < cfg.epochs:
                ckpts.save(accelerator, clock.tick(), ema)
    bar.close()

    accelerator.wait_for_everyone()
    best = eval_model()
    best.load_state_dict(torch.load(_best_path(out_dir, progress.best_step), weights_only=True))
    shares = {"rows_per_process": [len(recipe.predict_rows)]}
    outputs = recipe.predict(best, accelerator, shares)
    if accelerator.is_main_process:
        write_json(asdict(clock.tick()) | {"tasks": tasks, "total_steps": total_steps,
                                           "num_processes": accelerator.num_processes,
                                           "predict_rows_per_process": shares["rows_per_process"]},
                   out_dir / "progress.json")
        with atomic_path(done) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, rows=recipe.predict_rows, **outputs)
        ckpts.clear()
        if not cfg.keep_fold_models:
            _best_path(out_dir, progress.best_step).unlink(missing_ok=True)
    accelerator.free_memory()
    return outputs
