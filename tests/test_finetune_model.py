"""Inputs, batching and the head of the cross-encoder, on a tiny from-scratch encoder."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from finetune.backbone import Backbone, id_vocabs
from finetune.batches import PairCollator, inference_batches, label_indices, target_probs, train_loader
from finetune.config import FinetuneConfig
from finetune.inputs import ID_FIELDS, UNIT_FIELDS, EncodedPairs, IdVocab
from finetune.model import CrossEncoder, pool
from finetune.units import Ragged, char_units, word_units
from esci.backbones import tiny_xlmr_config
from transformers import AutoModel


def test_units_are_deterministic_sorted_buckets():
    a = char_units("Apple Watch band", 1000)
    assert np.array_equal(a, char_units("apple  watch BAND", 1000))  # normalised the same
    assert np.all(np.diff(a) > 0) and a.max() < 1000
    assert len(word_units("apple watch band", 50)) <= 3
    assert len(char_units("", 10)) == 0


def test_ragged_take_gives_embedding_bag_offsets():
    r = Ragged.from_arrays([np.array([1, 2]), np.array([], dtype=np.int64), np.array([3, 4, 5])])
    flat, starts = r.take([2, 1, 0])
    assert flat.tolist() == [3, 4, 5, 1, 2] and starts.tolist() == [0, 3, 3]


def test_rare_and_missing_ids_share_the_unknown_row():
    vocab = IdVocab.from_counts(pd.Series(["nike", "nike", "acme", ""]), min_count=2)
    assert vocab.lookup(pd.Series(["nike", "acme", "", "zzz"])).tolist() == [1, 0, 0, 0]


def test_pretrained_brand_table_seeds_the_id_embedding():
    table = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    frame = pd.DataFrame({"product_id": ["a", "b"], "product_locale": ["us", "us"],
                          "brand": ["nike", "acme"], "color": ["red", "red"], "locale": ["us", "us"]})
    backbone = Backbone("x", None, "k", {"brand": (["acme", "nike"], table)})
    vocabs, tables = id_vocabs(frame, backbone, min_count=2)
    assert vocabs["brand"].lookup(frame["brand"]).tolist() == [2, 1]
    assert torch.equal(tables["brand"], torch.cat([torch.zeros(1, 3), table]))
    assert vocabs["color"].values == ["red"] and "color" not in tables


def _pairs(n: int = 6, seed: int = 0) -> EncodedPairs:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, size=n)
    tokens = Ragged.from_arrays([np.concatenate([[0], rng.integers(4, 50, size=l - 2), [2]]) for l in lengths])
    tables = {name: Ragged.from_arrays([rng.integers(0, 64, size=3) for _ in range(n)]) for name, _, _ in UNIT_FIELDS}
    rows = {name: np.arange(n) for name, _, _ in UNIT_FIELDS}
    ids = {name: rng.integers(0, 3, size=n) for name in ID_FIELDS}
    return EncodedPairs(np.array([str(i) for i in range(n)], dtype=object), tokens, None, tables, rows, ids,
                        {name: 3 for name in ID_FIELDS})


def test_dynamic_padding_pads_to_the_batch_longest():
    pairs = _pairs()
    batch = PairCollator(pairs, pad_id=1)([0, 3])
    longest = max(pairs.tokens.lengths()[[0, 3]])
    assert batch["input_ids"].shape == (2, longest)
    assert batch["attention_mask"].sum(1).tolist() == pairs.tokens.lengths()[[0, 3]].tolist()
    assert PairCollator(pairs, pad_id=1, pad_to=40)([0, 3])["input_ids"].shape == (2, 40)


def test_length_grouped_batches_pad_less_than_random_ones():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 200, size=2000)
    pairs = SimpleNamespace(lengths=lambda: lengths)
    rows = np.arange(2000)

    def padded(grouped: bool) -> int:
        batches = train_loader(rows, pairs, lambda b: b, 16, seed=0, epoch=0, length_grouped=grouped).batch_sampler
        return sum(len(b) * lengths[b].max() for b in batches)
    assert padded(True) < 0.7 * padded(False)
    seen = [i for b in train_loader(rows, pairs, lambda b: b, 16, 0, 0).batch_sampler for i in b]
    assert sorted(seen) == list(range(2000))
    again = [i for b in train_loader(rows, pairs, lambda b: b, 16, 0, 0).batch_sampler for i in b]
    assert seen == again  # same (seed, epoch) -> same order: what resuming relies on
    batches = inference_batches(rows, pairs, 100)
    assert all(np.all(np.diff(lengths[b]) >= 0) for b in batches)


def test_targets_cover_every_task():
    t = target_probs(torch.tensor(label_indices(["E", "S", "C", "I"])))
    assert t["task2"].argmax(1).tolist() == [0, 1, 2, 3]
    assert torch.allclose(t["task1"][:, 1], torch.tensor([1.0, 0.1, 0.01, 0.0]))
    assert t["task3"][:, 1].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert label_indices([None, "E"]).tolist() == [-1, 0]


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert pool(hidden, torch.tensor([[1, 1, 0]]), "mean").item() == 2.0
    assert pool(hidden, torch.tensor([[1, 1, 0]]), "cls").item() == 1.0


@pytest.mark.parametrize("units,ids", [(True, True), (False, False)])
def test_head_concatenates_units_and_ids_into_every_task_head(units, ids):
    cfg = FinetuneConfig(units=units, id_embeddings=ids, char_buckets=64, word_buckets=64, unit_dim=4,
                         id_dim=2, mlp_hidden=8)
    torch.manual_seed(0)
    encoder = AutoModel.from_config(tiny_xlmr_config(60, hidden=16, layers=1, heads=2, max_length=32))
    model = CrossEncoder(encoder, cfg, ["task1", "task2", "task3"], {n: 3 for n in ID_FIELDS})
    assert model.mlp[1].in_features == 16 + (6 * 4 if units else 0) + (3 * 2 if ids else 0)
    out = model(PairCollator(_pairs(), pad_id=1)([0, 1, 2]))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"task1": (3, 1), "task2": (3, 4), "task3": (3, 1)}
    assert model.get_input_embeddings() is encoder.get_input_embeddings()
    with pytest.raises(ValueError, match="subset"):
        CrossEncoder(encoder, cfg, ["task9"], {n: 3 for n in ID_FIELDS})


def test_a_bad_finetune_config_is_a_one_line_error():
    from esci.config import load_config
    from tests.conftest import TINY_PRESET
    with pytest.raises(ValueError, match=r"finetune.pooling: 'max'"):
        load_config(TINY_PRESET, ["finetune.pooling=max"])
    with pytest.raises(ValueError, match="finetune.tasks"):
        load_config(TINY_PRESET, ["finetune.tasks=[task1]"])
    assert load_config(TINY_PRESET, ["finetune.learning_rate=1e-4"]).finetune.learning_rate == 1e-4
