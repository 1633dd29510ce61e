"""Multi-task domain pre-training: one HF Accelerate loop, one CPU process to many GPUs.

    python -m pretrain.train --config configs/pretrain_tiny.yaml [--data-dir D] [--run R]
                             [--set key=value ...] [--resume] [--model-path DIR]
    accelerate launch -m pretrain.train --config configs/pretrain_gpu_large.yaml --model-path DIR

Reads the product catalogue of ``data_dir``, trains MLM + Product2Query + Product2Brand/Color +
contrastive (weights in the config; 0 = off) and writes ``runs/<run>/pretrain/``: the encoder and
tokenizer (``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load them), the
brand/colour embedding tables and vocabularies, the resolved config, the per-step loss log and
``metrics.json`` (held-out MLM loss before/after, [UNK] rates). Checkpoints and the live log are
kept in ``runs/<run>/pretrain_work/``; ``--resume`` continues from its latest checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_scheduler

from esci import backbones
from esci.config import load_config, to_yaml
from pretrain import outputs
from pretrain.batches import EpochOrder, TaskBatcher
from pretrain.config import TASK_WEIGHTS, PretrainConfig, checked
from pretrain.corpus import IGNORE, Corpus, load_corpus
from pretrain.model import MultiTaskModel, load_backbone
from pretrain.vocab_extension import coverage_report, extend_tokenizer, unk_rates

RESUME_MAY_CHANGE = ("save_every",)  # every other key must match the checkpoint's config
HELDOUT_STREAM = 2**31  # seed-stream id of the held-out masks, apart from every epoch id


@dataclasses.dataclass
class Progress:
    """Loop position, checkpointed with the model so a resumed run picks up where it stopped."""
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of ``epoch`` consumed
    heldout_before: float = float("nan")

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def validate(cfg: PretrainConfig) -> None:
    """Raise a one-line error for a config that cannot work (types are coerced by ``checked``)."""
    weights = {name: getattr(cfg, name) for name in TASK_WEIGHTS}
    if any(w < 0 for w in weights.values()) or not any(weights.values()):
        raise ValueError(f"pretrain config: task weights must be >= 0 and not all 0, got {weights}")
    if cfg.pooling not in ("mean", "cls"):
        raise ValueError(f"pretrain config: pooling must be mean or cls, got {cfg.pooling!r}")
    if cfg.max_steps < 1 or cfg.batch_size < 2 or cfg.grad_accum_steps < 1:
        raise ValueError("pretrain config: need max_steps >= 1, batch_size >= 2 (in-batch "
                         f"negatives), grad_accum_steps >= 1; got {cfg.max_steps}, "
                         f"{cfg.batch_size}, {cfg.grad_accum_steps}")
    backbones.resolve(cfg.backbone)  # unknown backbone path: clear error before any work


# ---------------------------------------------------------------- tokenizer and model
def build_tokenizer(cfg: PretrainConfig, corpus: Corpus):
    """The backbone's tokenizer (trained on the corpus for scratch), extended to cover it."""
    cut = cfg.tokenizer_text_chars or None
    texts = corpus.frame["text"].str.slice(0, cut).tolist()
    train_texts = corpus.train["text"].str.slice(0, cut).tolist()
    tokenizer = backbones.load_tokenizer(cfg.backbone, train_texts, cfg.scratch_vocab_size)
    locales = corpus.frame["product_locale"].tolist()
    before = unk_rates(tokenizer, texts, locales)
    added: list[str] = []
    if cfg.extend_vocab:
        added = extend_tokenizer(tokenizer, train_texts, cfg.extend_min_count, cfg.extend_max_tokens)
    after = unk_rates(tokenizer, texts, locales)
    return tokenizer, coverage_report(before, after), added


def param_groups(model: MultiTaskModel, cfg: PretrainConfig, head_is_new: bool) -> list[dict]:
    """Encoder at ``learning_rate``; freshly initialised heads at ``head_learning_rate``."""
    fresh = {id(p) for m in (model.p2q_head, model.brand_head, model.color_head) for p in m.parameters()}
    if head_is_new:
        tied = model.mlm_head_decoder_weight()
        fresh |= {id(p) for p in model.mlm_head.parameters() if p is not tied}
    groups: dict[tuple[float, float], list] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        lr = cfg.head_learning_rate if id(p) in fresh else cfg.learning_rate
        decay = 0.0 if p.ndim < 2 else cfg.weight_decay  # no decay on biases and LayerNorm
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


# ---------------------------------------------------------------- loss log
class LossMeter:
    """Per-task mean loss over the micro-batches of one optimizer step and over processes.

    A micro-batch without targets for a task (no brand in the vocabulary among its products, no
    masked token) trains on a zero loss but is left out of the mean; a step with none logs null.
    """

    def __init__(self, tasks: list[str]):
        self.keys = tasks + ["loss"]
        self.sums = torch.zeros(len(self.keys), dtype=torch.float64)
        self.counts = torch.zeros(len(self.keys), dtype=torch.float64)

    def add(self, task_losses: dict, total: torch.Tensor, batch: dict) -> None:
        values = {**task_losses, "loss": total}
        for i, key in enumerate(self.keys):
            if key in values and has_targets(batch, key):
                self.sums[i] += float(values[key].detach())
                self.counts[i] += 1

    def pop(self, accelerator: Accelerator) -> dict:
        both = accelerator.reduce(torch.cat([self.sums, self.counts]).to(accelerator.device), "sum")
        sums, counts = both.cpu().split(len(self.keys))
        self.sums.zero_()
        self.counts.zero_()
        return {k: (round(float(s / c), 6) if c > 0 else None)
                for k, s, c in zip(self.keys, sums, counts)}


def has_targets(batch: dict, task: str) -> bool:
    if task in ("brand", "color"):
        return bool((batch["anon"][f"{task}_labels"] != IGNORE).any())
    if task == "mlm":
        return bool((batch["mlm"]["labels"] != IGNORE).any())
    return True


# ---------------------------------------------------------------- held-out MLM loss
@torch.no_grad()
def heldout_mlm_loss(model: MultiTaskModel, batcher: TaskBatcher, n_rows: int, cfg: PretrainConfig,
                     accelerator: Accelerator) -> float:
    """Mean cross-entropy per masked token over the held-out products, with fixed masks.

    The masks depend only on the seed, so every evaluation (before/after, every ablation row with
    the same tokenizer) scores the same masked tokens.
    """
    if n_rows == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, n_rows, cfg.eval_batch_size):
        rows = list(range(start, min(start + cfg.eval_batch_size, n_rows)))
        inputs = {k: v.to(accelerator.device) for k, v in
                  batcher.masked(rows, [cfg.seed, HELDOUT_STREAM, start]).items()}
        n = int((inputs["labels"] != -100).sum())
        if n == 0:
            continue
        with accelerator.autocast():
            loss = model.mlm_loss(inputs)
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count if count else float("nan")


# ---------------------------------------------------------------- checkpoints
def work_dir(cfg: PretrainConfig) -> Path:
    return Path(cfg.runs_dir) / cfg.run / "pretrain_work"


def latest_checkpoint(work: Path) -> Path | None:
    found = sorted((work / "checkpoints").glob("step_*"))
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, work: Path, step: int, keep: int = 2) -> None:
    """``accelerator.save_state`` into a temp dir renamed into place, keeping the last ``keep``."""
    final = work / "checkpoints" / f"step_{step:08d}"
    tmp = work / "checkpoints" / f".tmp_step_{step:08d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted((work / "checkpoints").glob("step_*"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def check_resumable(cfg: PretrainConfig, work: Path) -> Path:
    ckpt = latest_checkpoint(work)
    if ckpt is None:
        raise FileNotFoundError(f"pretrain --resume: no checkpoint in {work / 'checkpoints'}")
    saved = json.loads((work / "config.json").read_text())
    now = dataclasses.asdict(cfg)
    changed = sorted(k for k in now if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k])
    if changed:
        raise ValueError(f"pretrain --resume: config differs from the checkpoint's in {changed}; "
                         "resume with the same config, or start afresh without --resume")
    return ckpt


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past ``step``: the steps after the checkpoint are trained again."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


# ---------------------------------------------------------------- the loop
def train(cfg: PretrainConfig, resume: bool = False, show_progress: bool = True,
          on_step: Callable[[dict], None] | None = None) -> dict:
    """Pre-train as ``cfg`` says; returns ``metrics.json``'s content. ``on_step`` sees each log row."""
    cfg = checked(cfg)
    validate(cfg)
    threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        return _train(cfg, resume, show_progress, on_step)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: PretrainConfig, resume: bool, show_progress: bool,
           on_step: Callable[[dict], None] | None) -> dict:
    started = time.time()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision,
                              gradient_accumulation_steps=cfg.grad_accum_steps)
    set_seed(cfg.seed)
    work = work_dir(cfg)
    ckpt = check_resumable(cfg, work) if resume else None

    # --- data and tokenizer
    corpus = load_corpus(cfg)
    if ckpt is None and accelerator.is_main_process:
        # built once and saved; every process (and a resumed run) loads the saved one, so all
        # agree on the vocabulary even if tokenizer training were not deterministic
        tokenizer, coverage, added = build_tokenizer(cfg, corpus)
        if work.exists():
            shutil.rmtree(work)
        tokenizer.save_pretrained(work / "tokenizer")
        coverage.to_csv(work / "vocab_coverage.csv", index=False)
        (work / "extension_chars.json").write_text(json.dumps(added, ensure_ascii=False))
        (work / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    accelerator.wait_for_everyone()
    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")

    # --- model, optimiser, schedule
    encoder, mlm_head, head_is_new = load_backbone(cfg, tokenizer)
    model = MultiTaskModel(encoder, mlm_head, cfg, len(corpus.brand_vocab), len(corpus.color_vocab))
    train_frame, heldout_frame = corpus.train, corpus.heldout
    batcher = TaskBatcher(train_frame, tokenizer, cfg)
    heldout_batcher = TaskBatcher(heldout_frame, tokenizer, cfg)
    order = EpochOrder(len(train_frame), cfg.seed)
    # its own generator: creating an iterator then draws no number from the global RNG, so a
    # resumed run's dropout masks match the uninterrupted run's
    loader = DataLoader(order, batch_size=cfg.batch_size, shuffle=False, drop_last=True,
                        collate_fn=batcher, generator=torch.Generator().manual_seed(cfg.seed))
    if len(loader) == 0:
        raise ValueError(f"pretrain: {len(train_frame)} training products, fewer than "
                         f"batch_size={cfg.batch_size}")
    optimizer = torch.optim.AdamW(param_groups(model, cfg, head_is_new))
    n_proc = accelerator.num_processes  # a prepared scheduler steps once per process
    scheduler = get_scheduler("cosine", optimizer,
                              num_warmup_steps=int(cfg.warmup_ratio * cfg.max_steps) * n_proc,
                              num_training_steps=cfg.max_steps * n_proc)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    log_path = work / "loss_log.jsonl"
    unwrapped = accelerator.unwrap_model(model)

    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        if accelerator.is_main_process:
            trim_log(log_path, progress.step)
    else:
        progress.heldout_before = heldout_mlm_loss(unwrapped, heldout_batcher, len(heldout_frame),
                                                   cfg, accelerator)

    # --- train
    weights = {name.removesuffix("_weight"): getattr(cfg, name) for name in TASK_WEIGHTS}
    bar = tqdm(total=cfg.max_steps, initial=progress.step, desc="pretrain",
               disable=not (show_progress and accelerator.is_local_main_process))
    model.train()
    meter = LossMeter([t for t, w in weights.items() if w])
    while progress.step < cfg.max_steps:
        order.set_epoch(progress.epoch)
        batches = (accelerator.skip_first_batches(loader, progress.batch_in_epoch)
                   if progress.batch_in_epoch else loader)
        for batch in batches:
            with accelerator.accumulate(model):
                task_losses = model(batch)
                total = sum(weights[t] * loss for t, loss in task_losses.items() if weights[t])
                accelerator.backward(total)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            progress.batch_in_epoch += 1
            meter.add(task_losses, total, batch)
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            row = {"step": progress.step, "epoch": progress.epoch,
                   "lr": scheduler.get_last_lr()[0], **meter.pop(accelerator)}
            if accelerator.is_main_process:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items()
                             if k not in ("step", "epoch", "lr") and v is not None})
            if cfg.save_every and progress.step % cfg.save_every == 0 and progress.step < cfg.max_steps:
                save_checkpoint(accelerator, work, progress.step)
            if on_step is not None:
                on_step(row)
            if progress.step >= cfg.max_steps:
                break
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    bar.close()

    # --- evaluate and save
    after = heldout_mlm_loss(unwrapped, heldout_batcher, len(heldout_frame), cfg, accelerator)
    metrics = {
        "backbone": cfg.backbone, "steps": progress.step, "epochs_seen": progress.epoch,
        "train_products": len(train_frame), "heldout_products": len(heldout_frame),
        "heldout_mlm_loss_before": progress.heldout_before, "heldout_mlm_loss_after": after,
        "mlm_head_pretrained": not head_is_new, "processes": n_proc,
        "added_tokens": len(json.loads((work / "extension_chars.json").read_text())),
        "brand_vocab": len(corpus.brand_vocab), "color_vocab": len(corpus.color_vocab),
        "seconds": round(time.time() - started, 1),
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        outputs.write_pretrain_dir(Path(cfg.runs_dir) / cfg.run / "pretrain", unwrapped, tokenizer,
                                   corpus, to_yaml(cfg), work, metrics)
    accelerator.wait_for_everyone()
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Multi-task domain pre-training of an encoder.")
    ap.add_argument("--config", default="configs/pretrain_cpu.yaml", help="YAML preset")
    ap.add_argument("--data-dir", help="directory in the official ESCI layout (or a run dir)")
    ap.add_argument("--run", help="outputs go to runs/<run>/pretrain/")
    ap.add_argument("--model-path", help="local Hugging Face checkpoint dir used as the backbone")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override such as max_steps=100 (repeatable)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    for key, value in (("data_dir", args.data_dir), ("run", args.run), ("backbone", args.model_path)):
        if value:
            overrides.append(f"{key}={value}")
    from data.esci_io import EsciDataError
    try:
        cfg = load_config(args.config, overrides, cls=PretrainConfig)
        metrics = train(cfg, resume=args.resume)
    except (EsciDataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
