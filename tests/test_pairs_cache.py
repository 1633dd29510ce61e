"""The sharded pairs cache on the real sample: same content as one direct encode, resumable
shard by shard, and reused without tokenising."""
from __future__ import annotations

import os

import numpy as np
import pytest

from data.esci_io import load_esci
from esci.backbones import load_tokenizer
from esci.config import DataConfig
from finetune import pairs_cache
from finetune.config import FinetuneConfig
from finetune.inputs import ID_FIELDS, IdVocab, encode_pairs, pair_texts, text_settings

SHARD = 500  # the 2,670 sample pairs -> 6 shards, the last one partial


@pytest.fixture(scope="module")
def setting(sample_dir):
    cfg = FinetuneConfig()
    data = load_esci(sample_dir)
    ts = text_settings(cfg, DataConfig())
    texts = pair_texts(data.examples, data.products, ts)
    products = texts.drop_duplicates(["product_id", "product_locale"])
    vocabs = {n: IdVocab.from_counts(products[n], 1 if n == "locale" else cfg.id_min_count) for n in ID_FIELDS}
    return texts, load_tokenizer("minilm"), ts, cfg, vocabs


@pytest.fixture(scope="module")
def direct(setting):
    """The reference: every pair encoded in one pass, uncached."""
    texts, tok, ts, cfg, vocabs = setting
    return encode_pairs(texts, tok, ts, cfg, vocabs)


def _ragged_equal(a, b) -> bool:
    return np.array_equal(a.values, b.values) and np.array_equal(a.offsets, b.offsets)


def test_sharded_cache_equals_a_direct_encode(setting, direct, tmp_path):
    texts, tok, ts, cfg, vocabs = setting
    got = pairs_cache.cached_pairs(tmp_path, texts, tok, "minilm", ts, cfg, vocabs, shard_pairs=SHARD)
    want = direct
    directory = pairs_cache.cache_dir_of(tmp_path, texts, "minilm", ts, cfg, vocabs)
    assert len(list(directory.glob("rows-*.npz"))) == 6 and (directory / "done.json").is_file()
    assert list(got.example_id) == list(want.example_id)
    assert _ragged_equal(got.tokens, want.tokens)
    assert want.token_types is not None and want.token_types.values.any()  # BERT: 1 on the product side
    assert _ragged_equal(got.token_types, want.token_types)
    for name in want.unit_tables:
        assert _ragged_equal(got.unit_tables[name], want.unit_tables[name]), name
        assert np.array_equal(got.unit_rows[name], want.unit_rows[name]), name
    for name in ID_FIELDS:
        assert np.array_equal(got.ids[name], want.ids[name]) and got.id_sizes[name] == want.id_sizes[name]
    # compact: the narrow dtypes the cache promises
    assert got.tokens.values.dtype == np.uint16 and got.token_types.values.dtype == np.uint8
    assert got.tokens.offsets.dtype == np.int32 and got.unit_tables["main_char"].values.dtype == np.uint16


def test_a_deleted_shard_is_rebuilt_alone_and_a_rerun_does_not_tokenise(setting, tmp_path, monkeypatch):
    texts, tok, ts, cfg, vocabs = setting
    first = pairs_cache.cached_pairs(tmp_path, texts, tok, "minilm", ts, cfg, vocabs, shard_pairs=SHARD)
    directory = pairs_cache.cache_dir_of(tmp_path, texts, "minilm", ts, cfg, vocabs)
    shards = sorted(directory.glob("rows-*.npz"))
    for i, p in enumerate(shards):  # old, distinct mtimes so a rewrite is visible
        os.utime(p, ns=(10 ** 18 + i, 10 ** 18 + i))
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    victim = shards[2]
    victim.unlink()
    built = []
    real = pairs_cache._encode_shard
    monkeypatch.setattr(pairs_cache, "_encode_shard",
                        lambda df, a, b, *rest: built.append((a, b)) or real(df, a, b, *rest))
    again = pairs_cache.cached_pairs(tmp_path, texts, tok, "minilm", ts, cfg, vocabs, shard_pairs=SHARD)
    assert built == [(2 * SHARD, 3 * SHARD)]
    after = {p.name: p.stat().st_mtime_ns for p in directory.glob("rows-*.npz")}
    assert after.keys() == before.keys()
    assert {n: t for n, t in after.items() if n != victim.name} == \
        {n: t for n, t in before.items() if n != victim.name}
    assert _ragged_equal(again.tokens, first.tokens)
    assert _ragged_equal(again.unit_tables["main_char"], first.unit_tables["main_char"])

    def must_not_encode(*args, **kwargs):
        raise AssertionError("a complete cache must load without tokenising")

    monkeypatch.setattr(pairs_cache, "_encode_shard", must_not_encode)
    loaded = pairs_cache.cached_pairs(tmp_path, texts, must_not_encode, "minilm", ts, cfg, vocabs,
                                      shard_pairs=SHARD)
    assert _ragged_equal(loaded.tokens, first.tokens)
    assert np.array_equal(loaded.unit_rows["desc_word"], first.unit_rows["desc_word"])


def test_a_killed_build_keeps_whole_shards_and_resumes(setting, direct, tmp_path, monkeypatch):
    texts, tok, ts, cfg, vocabs = setting
    real, calls = pairs_cache._encode_shard, []

    def dies_on_the_third(df, a, b, *rest):
        calls.append(a)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(df, a, b, *rest)

    monkeypatch.setattr(pairs_cache, "_encode_shard", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        pairs_cache.cached_pairs(tmp_path, texts, tok, "minilm", ts, cfg, vocabs, shard_pairs=SHARD)
    directory = pairs_cache.cache_dir_of(tmp_path, texts, "minilm", ts, cfg, vocabs)
    assert len(list(directory.glob("rows-*.npz"))) == 2 and not (directory / "done.json").exists()
    monkeypatch.setattr(pairs_cache, "_encode_shard", real)
    resumed = pairs_cache.cached_pairs(tmp_path, texts, tok, "minilm", ts, cfg, vocabs, shard_pairs=SHARD)
    assert _ragged_equal(resumed.tokens, direct.tokens)
