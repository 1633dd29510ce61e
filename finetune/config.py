"""Config of the fine-tuning stage (section ``finetune`` of the run config).

One flat dataclass. Every trick is off by default and switched on by its flag; the ablation
(``python -m finetune.ablation``) flips exactly these flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

TASKS = ("task1", "task2", "task3")


@dataclass
class FinetuneConfig:
    enabled: bool = False
    model_name: str = "xenc_minilm"  # oof/<model_name>.parquet, test/<model_name>.parquet

    # --- backbone: minilm | scratch | pretrain (runs/<run>/pretrain/) | a local HF checkpoint dir
    backbone: str = "minilm"
    scratch_vocab_size: int = 4000
    scratch_hidden: int = 64
    scratch_layers: int = 2
    scratch_heads: int = 2

    # --- input: (query, product text) pairs; None = take the value from the run's `data` section
    product_fields: list[str] | None = None
    field_sep: str | None = None
    max_field_chars: int | None = 400  # the encoder sees max_length tokens; longer text only costs
    locale_marker: bool | None = None
    max_length: int = 64  # tokens of query + product text
    truncation: str = "longest_first"  # tokenizer strategy: longest_first | only_second

    # --- head: pooled encoder output + ID embeddings + multi-granular units -> MLP -> task heads
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # must include task2
    multitask: bool = True  # False: one model per task, merged into one prediction file
    pooling: str = "cls"  # cls | mean
    id_embeddings: bool = True  # brand, colour, locale
    id_dim: int = 16
    id_min_count: int = 2  # brand/colour values seen fewer times share the unknown row
    units: bool = True  # char-3-gram and word EmbeddingBags of query / title+brand+colour+bullets / description
    unit_dim: int = 32
    char_buckets: int = 16384  # hashed char-3-gram rows; collisions only blur rare grams
    word_buckets: int = 16384
    mlp_hidden: int = 256
    head_dropout: float = 0.1
    task1_weight: float = 1.0
    task2_weight: float = 1.0
    task3_weight: float = 1.0

    # --- optimisation
    epochs: int = 1
    batch_size: int = 16
    grad_accum_steps: int = 1
    learning_rate: float = 5e-5  # encoder
    head_learning_rate: float = 1e-3  # ID embeddings, units, MLP, heads (new, randomly initialised)
    weight_decay: float = 0.01
    scheduler: str = "cosine"  # any transformers.get_scheduler name
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16 (GPU)
    seed: int = 42

    # --- model selection on an inner validation split of each training fold
    valid: str = "inner"  # inner: query-grouped slice of the training folds | heldout: the OOF fold itself
    valid_fraction: float = 0.1
    eval_every: int = 0  # optimizer steps between evaluations; 0 = at the end of each epoch only
    select_metric: str = "auto"  # auto: mean over the heads of task1_ndcg_informative, task2_micro_f1, task3_micro_f1; or one of them
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off

    # --- losses
    poly1_epsilon: float = 0.0  # Poly-1 cross-entropy; 0 = plain cross-entropy
    label_smoothing: float = 0.0
    sample_weight: str = "none"  # none | balanced (inverse label frequency)

    # --- tricks
    ema: bool = False
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay_t = min(decay, (1+t)/(10+t)): short runs are not stuck at the init
    fgm: bool = False
    fgm_epsilon: float = 1.0
    rdrop: bool = False
    rdrop_alpha: float = 1.0
    rdrop_mode: str = "dropout"  # dropout: two dropout passes | clean_adv: clean vs FGM logits (needs fgm)
    mixup: bool = False
    mixup_alpha: float = 0.4  # lambda ~ Beta(alpha, alpha)
    mixup_prob: float = 0.5  # share of steps that mix

    # --- confident learning (cleanlab on the out-of-fold task-2 probabilities, then retrain)
    cleanlab: bool = False
    cleanlab_fraction: float = 0.04  # > 0: remove this share, lowest label quality first (the source's 4%); 0: cleanlab's count
    cleanlab_filter_by: str = "prune_by_noise_rate"

    # --- runtime
    infer_batch_size: int = 64
    checkpoint_every: int = 50  # optimizer steps between resumable checkpoints; 0 = epoch ends only
    keep_fold_models: bool = False  # keep each fold's best weights (best.pt) after its predictions
    num_threads: int = 0  # torch CPU threads; 0 = torch's default

    def __post_init__(self):
        # YAML reads "1e-3" (no dot) as a string; take it as the number it was meant to be.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, (str, int)) and not isinstance(value, bool):
                try:
                    setattr(self, f.name, float(value))
                except ValueError:
                    raise ValueError(f"config finetune.{f.name}: {value!r} is not a number") from None
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config finetune.{name}: {getattr(self, name)!r} is not one of {allowed}")
        if "task2" not in self.tasks or not set(self.tasks) <= set(TASKS):
            raise ValueError(f"config finetune.tasks: {self.tasks} must include task2 (the E/S/C/I "
                             f"probabilities every prediction file needs) and only {list(TASKS)}")
        if self.rdrop and self.rdrop_mode == "clean_adv" and not self.fgm:
            raise ValueError("config finetune.rdrop_mode=clean_adv compares clean and FGM logits: "
                             "set finetune.fgm=true")


CHOICES = {"pooling": ("cls", "mean"), "valid": ("inner", "heldout"), "sample_weight": ("none", "balanced"),
           "rdrop_mode": ("dropout", "clean_adv"), "truncation": ("longest_first", "only_second"),
           "select_metric": ("auto", "task1_ndcg_informative", "task2_micro_f1", "task3_micro_f1")}
