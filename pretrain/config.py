"""Config of multi-task domain pre-training (``python -m pretrain.train --config ...``).

One flat dataclass; a preset in ``configs/pretrain_<name>.yaml`` sets a few keys and
``--set key=value`` overrides any of them. A task's ``*_weight`` of 0 switches the task off.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

TASK_WEIGHTS = ("mlm_weight", "p2q_weight", "brand_weight", "color_weight", "infonce_weight",
                "simcse_weight")


@dataclass
class PretrainConfig:
    # --- where: outputs go to <runs_dir>/<run>/pretrain/
    run: str = "pretrain"
    runs_dir: str = "runs"
    data_dir: str = "data/esci_sample"
    subset: str = "all"

    # --- corpus: product text as data.product_text.render_products draws it
    product_fields: list[str] = field(
        default_factory=lambda: ["title", "brand", "color", "bullets", "description"])
    field_sep: str = " | "
    max_field_chars: int = 1000
    locale_marker: bool = True
    heldout_fraction: float = 0.05  # products kept out of training, for the held-out MLM loss

    # --- backbone: minilm | scratch | a local Hugging Face checkpoint directory
    backbone: str = "minilm"
    scratch_vocab_size: int = 4000
    scratch_hidden: int = 64
    scratch_layers: int = 2
    scratch_heads: int = 2
    # Characters of each product text used to train the scratch tokenizer, find uncovered
    # characters and measure [UNK] rates (0 = all). The encoder reads at most max_length tokens.
    tokenizer_text_chars: int = 0
    extend_vocab: bool = True  # add the characters the vocabulary maps to [UNK]
    extend_min_count: int = 1  # a character must occur this often in the corpus to be added
    extend_max_tokens: int = 10000

    # Train the task heads only, encoder frozen: what the backbone knows as shipped (the MLM
    # head of all-MiniLM-L6-v2 is not in its checkpoint, so its step-0 MLM loss says nothing).
    freeze_encoder: bool = False

    # --- tasks (weight 0 = off)
    mlm_weight: float = 1.0
    mlm_probability: float = 0.15
    p2q_weight: float = 1.0
    p2q_cut_prob: float = 0.5  # probability that the pseudo-query span is cut out of the product text
    p2q_two_span_prob: float = 0.3  # probability that a pseudo query is two spans, not one
    p2q_span_mean: float = 20.0  # Poisson mean of the pseudo-query length in characters
    p2q_span_mean_jp: float = 10.0  # jp queries are about half as long in characters
    p2q_span_min: int = 2
    p2q_span_max: int = 48
    brand_weight: float = 1.0
    color_weight: float = 1.0
    label_min_count: int = 2  # brand/colour values seen fewer times get the ignored label
    infonce_weight: float = 1.0  # pseudo query vs its product, in-batch negatives
    simcse_weight: float = 1.0  # two dropout views of the same product
    temperature: float = 0.05
    pooling: str = "mean"  # mean | cls: sentence embedding for the heads and contrastive tasks

    # --- optimisation
    max_length: int = 128
    query_max_length: int = 32
    batch_size: int = 16  # products per step per process; each task builds its views from them
    grad_accum_steps: int = 1
    max_steps: int = 200  # optimizer steps
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3  # new heads (MLM head too, when the checkpoint lacks it)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16 (GPU only)
    save_every: int = 0  # checkpoint every N optimizer steps (0: only the final model)
    eval_batch_size: int = 32
    seed: int = 0
    torch_threads: int = 0  # intra-op CPU threads (0 = torch's default); see configs/pretrain_cpu.yaml

    # --- frozen-encoder probe of the ablation (python -m pretrain.ablation)
    probe_run: str = ""  # a pipeline run dir with examples/folds.parquet; "" = folds made here
    probe_folds: int = 5  # used only when probe_run is ""
    probe_max_length: int = 64
    # Inverse L2 strength of the logistic regression. Frozen embeddings barely beat the majority
    # class on the sample; looser values (0.01 .. 1) overfit the 1537 features and score below it.
    probe_c: float = 0.001


def checked(cfg: PretrainConfig) -> PretrainConfig:
    """``cfg`` with scalar values coerced to their field types, or a one-line error.

    YAML reads ``3e-3`` (no dot) as a string; an override of a float key with it should work,
    and a non-number should fail here rather than deep inside the scheduler.
    """
    types = {"float": float, "int": int, "str": str, "bool": bool}
    values = {}
    for f in dataclasses.fields(cfg):
        value, want = getattr(cfg, f.name), types.get(str(f.type))
        if want is None or isinstance(value, want) and not (want is int and isinstance(value, bool)):
            continue
        try:
            if want is bool:
                if not isinstance(value, str) or value.lower() not in ("true", "false"):
                    raise ValueError
                values[f.name] = value.lower() == "true"
            elif want is int and isinstance(value, float) and value.is_integer():
                values[f.name] = int(value)
            elif want is float and isinstance(value, (int, str)) and not isinstance(value, bool):
                values[f.name] = float(value)
            elif want is int and isinstance(value, str):
                values[f.name] = int(value)
            elif want is str:
                values[f.name] = str(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"pretrain config: {f.name} must be {want.__name__}, got {value!r}") from None
    return dataclasses.replace(cfg, **values)
