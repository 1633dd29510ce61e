"""Mixed-task batches: every step draws products, and each enabled task builds its view of them.

Views (tensors ready for the encoder):
* ``mlm``: the product text, masked by ``DataCollatorForLanguageModeling``;
* ``p2q``: (pseudo query, product text) pairs, one positive and one same-locale negative per
  product, with binary ``targets``;
* ``anon``: the product text without its brand and colour names, with ``brand_labels`` /
  ``color_labels``;
* ``query`` and ``product``: pseudo query and unmasked product text, for InfoNCE and SimCSE.

Every random choice of a batch is seeded by (seed, epoch, position in the epoch), so a run
resumed from a checkpoint draws exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from transformers import DataCollatorForLanguageModeling

from pretrain.config import PretrainConfig
from pretrain.pseudo_query import (SpanSpec, cut_from_product, locale_index, make_pseudo_query,
                                   negative_queries)


class EpochOrder(Dataset):
    """Item k of epoch e is ``(e, k, row)``, ``row`` being a seeded permutation of the corpus."""

    def __init__(self, n_rows: int, seed: int):
        self.n_rows, self.seed, self.epoch = n_rows, seed, 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = self._order()

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, k: int) -> tuple[int, int, int]:
        return self.epoch, k, int(self.order[k])


def clip_to_tokens(tokenizer, texts: list[str], max_length: int, chunk: int = 512) -> list[str]:
    """Each text cut after the characters its first ``max_length`` tokens cover.

    Truncation would drop the rest anyway; cutting once up front saves re-tokenising long
    descriptions at every step.
    """
    out = []
    for i in range(0, len(texts), chunk):
        part = texts[i:i + chunk]
        enc = tokenizer(part, truncation=True, max_length=max_length, return_offsets_mapping=True)
        for text, offsets in zip(part, enc["offset_mapping"]):
            end = max((e for _, e in offsets), default=len(text))
            out.append(text[:end] if end else text)
    return out


def span_spec(cfg: PretrainConfig) -> SpanSpec:
    return SpanSpec(cfg.p2q_span_mean, cfg.p2q_span_mean_jp, cfg.p2q_span_min, cfg.p2q_span_max,
                    cfg.p2q_two_span_prob)


class TaskBatcher:
    """``collate_fn`` turning ``EpochOrder`` items into the views of the enabled tasks."""

    def __init__(self, frame: pd.DataFrame, tokenizer, cfg: PretrainConfig):
        self.frame = frame.reset_index(drop=True)
        self.tok = tokenizer
        self.cfg = cfg
        self.spec = span_spec(cfg)
        self.mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability)
        self.texts = clip_to_tokens(tokenizer, self.frame["text"].tolist(), cfg.max_length)
        self.anon = clip_to_tokens(tokenizer, self.frame["anon_text"].tolist(), cfg.max_length)
        self.sources = self.frame["query_source"].to_numpy(dtype=object)
        self.locales = self.frame["product_locale"].to_numpy(dtype=object)
        self.by_locale = locale_index(self.locales)

    def _encode(self, texts, pair=None, max_length=None) -> dict:
        return dict(self.tok(texts, pair, truncation="only_second" if pair else True,
                             max_length=max_length or self.cfg.max_length, padding=True,
                             return_tensors="pt"))

    def masked(self, rows: list[int], seed) -> dict:
        enc = self.tok([self.texts[r] for r in rows], truncation=True, max_length=self.cfg.max_length,
                       return_special_tokens_mask=True)
        examples = [{k: enc[k][i] for k in enc} for i in range(len(rows))]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.default_rng(seed).integers(2**62)))
            return dict(self.mlm(examples))

    def __call__(self, items: list[tuple[int, int, int]]) -> dict:
        epoch, first, _ = items[0]
        seed = [self.cfg.seed, epoch, first]
        rng = np.random.default_rng(seed)
        rows = [row for _, _, row in items]
        cfg = self.cfg
        batch: dict = {}
        if cfg.mlm_weight:
            batch["mlm"] = self.masked(rows, seed + [1])
        if cfg.p2q_weight or cfg.infonce_weight:
            drawn = [make_pseudo_query(self.sources[r], self.locales[r], self.spec, rng) for r in rows]
            queries = [q for q, _ in drawn]
        if cfg.p2q_weight:
            batch["p2q"] = self.query_pairs(rows, drawn, rng)
        if cfg.brand_weight or cfg.color_weight:
            batch["anon"] = self._encode([self.anon[r] for r in rows])
            if cfg.brand_weight:
                batch["anon"]["brand_labels"] = torch.as_tensor(self.frame["brand_label"].to_numpy()[rows])
            if cfg.color_weight:
                batch["anon"]["color_labels"] = torch.as_tensor(self.frame["color_label"].to_numpy()[rows])
        if cfg.infonce_weight or cfg.simcse_weight:
            batch["product"] = self._encode([self.texts[r] for r in rows])
        if cfg.infonce_weight:
            batch["query"] = self._encode(queries, max_length=cfg.query_max_length)
        return batch

    def query_pairs(self, rows: list[int], drawn, rng: np.random.Generator) -> dict:
        """Positive (own query) and negative (same-locale other product's query) pairs."""
        product_side = []
        for r, (_, spans) in zip(rows, drawn):
            cut = rng.random() < self.cfg.p2q_cut_prob
            product_side.append(cut_from_product(self.texts[r], self.sources[r], spans) if cut
                                else self.texts[r])
        partners, neg_queries = negative_queries(np.asarray(rows), self.locales, self.sources,
                                                 self.by_locale, self.spec, rng)
        queries = [q for q, _ in drawn]
        pairs_q, pairs_p, targets = list(queries), list(product_side), [1.0] * len(rows)
        for r, neg_q in zip(rows, neg_queries):
            if neg_q is None:
                continue
            # the negative's product side is cut the same way, so a cut is no label shortcut
            cut = rng.random() < self.cfg.p2q_cut_prob
            _, own_spans = make_pseudo_query(self.sources[r], self.locales[r], self.spec, rng)
            side = cut_from_product(self.texts[r], self.sources[r], own_spans) if cut else self.texts[r]
            pairs_q.append(neg_q)
            pairs_p.append(side)
            targets.append(0.0)
        enc = self._encode(pairs_q, pairs_p)
        enc["targets"] = torch.tensor(targets)
        # which corpus rows the product side and the query came from (for checks; not model input)
        enc["product_rows"] = torch.tensor(rows + [r for r, q in zip(rows, neg_queries) if q is not None])
        enc["query_rows"] = torch.tensor(rows + [int(j) for j in partners if j >= 0])
        return enc
