"""The on-disk cache of encoded pairs: a directory of fixed-size shards, built one by one and
reused by every fold, ablation variant and rerun.

``runs/<run>/finetune/cache/pairs-<key>/`` holds ``rows-<start>-<stop>.npz`` shards and, written
last, ``done.json``. Each shard is written atomically, so a killed build leaves only whole
shards and the rerun builds just the missing ones; peak memory during a build is one shard's
encoding, not the whole set's.

Unit bags are per unique text. Texts are numbered once over the whole frame in order of first
appearance, so the texts first seen in a shard are a contiguous range of table rows: each shard
stores that range, and the shards' tables concatenate into exactly the table ``encode_pairs``
builds in one pass.

Narrow dtypes, all lossless: token ids uint16 when the vocabulary fits (else int32), token types
uint8 and not stored when all zero, unit buckets uint16 when the bucket count fits, offsets and
rows int32 within a shard.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from esci.artifacts import atomic_path, write_json
from esci.config import fingerprint
from finetune.inputs import ID_FIELDS, UNIT_FIELDS, EncodedPairs, IdVocab, TextSettings, frame_digest
from finetune.units import Ragged, char_units, word_units

FORMAT = "sharded-v1"  # part of the key: a layout change never reads an old directory
SHARD_PAIRS = 200_000
TYPES_ABSENT, TYPES_ZERO, TYPES_STORED = 0, 1, 2  # what a shard holds for token type ids
UNIT_NAMES = [name for name, _, _ in UNIT_FIELDS]


def _narrowest(n_values: int) -> np.dtype:
    """Unsigned 16 bits when every id < n_values fits, else int32."""
    return np.dtype(np.uint16) if n_values <= 2 ** 16 else np.dtype(np.int32)


def _offsets(lengths: np.ndarray, dtype=np.int32) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out.astype(dtype)


@dataclass
class UnitPlan:
    """One unit field over the whole frame: a table row per example, the unique texts, and the
    first table row that is new in each row prefix."""

    codes: np.ndarray
    uniques: pd.Index
    first_new: np.ndarray  # first_new[r]: number of texts first seen before row r

    @classmethod
    def of(cls, texts: pd.Series) -> "UnitPlan":
        codes, uniques = pd.factorize(texts, sort=False)
        seen = np.maximum.accumulate(codes) + 1 if len(codes) else np.zeros(0, np.int64)
        return cls(codes.astype(np.int32), uniques, np.concatenate([[0], seen]).astype(np.int64))


def _encode_shard(df: pd.DataFrame, start: int, stop: int, tokenizer, ts: TextSettings, cfg,
                  vocabs: dict[str, IdVocab], plans: dict[str, UnitPlan]) -> dict[str, np.ndarray]:
    part = df.iloc[start:stop]
    enc = tokenizer(part["query"].tolist(), part["text"].tolist(), truncation=ts.truncation,
                    max_length=ts.max_length, padding=False)
    ids = enc["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    out = {"tokens_v": np.fromiter((t for x in ids for t in x), dtype=_narrowest(len(tokenizer)),
                                   count=int(lengths.sum())),
           "tokens_o": _offsets(lengths)}
    types_flag = TYPES_ABSENT
    if "token_type_ids" in enc:
        types = np.fromiter((t for x in enc["token_type_ids"] for t in x), dtype=np.int64,
                            count=int(lengths.sum()))
        types_flag = TYPES_STORED if types.any() else TYPES_ZERO
        if types_flag == TYPES_STORED:
            if types.max() > 255 or types.min() < 0:
                raise ValueError("finetune: token type ids outside 0..255 cannot be cached as uint8")
            out["types_v"] = types.astype(np.uint8)
    units = []
    for name, text, kind in UNIT_FIELDS:
        plan, n = plans[name], (cfg.char_buckets if kind == "char" else cfg.word_buckets)
        lo, hi = int(plan.first_new[start]), int(plan.first_new[stop])
        make = char_units if kind == "char" else word_units
        bags = [make(t, n) for t in plan.uniques[lo:hi]]
        out[f"unit_{name}_v"] = (np.concatenate(bags) if bags else np.zeros(0)).astype(_narrowest(n))
        out[f"unit_{name}_o"] = _offsets(np.array([len(b) for b in bags], dtype=np.int64))
        out[f"row_{name}"] = plan.codes[start:stop]
        units.append(hi - lo)
    for name in ID_FIELDS:
        out[f"id_{name}"] = vocabs[name].lookup(part[name]).astype(np.int32)
    # Read alone on load (npz members load lazily) to size the assembled arrays up front.
    out["meta"] = np.array([stop - start, int(lengths.sum()), types_flag]
                           + [len(out[f"unit_{n}_v"]) for n in UNIT_NAMES] + units, dtype=np.int64)
    return out


def _write_shard(arrays: dict[str, np.ndarray], path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _fill_ragged(values: np.ndarray, offsets: np.ndarray, v_at: int, o_at: int, part_v: np.ndarray,
                 part_o: np.ndarray) -> None:
    """Copy a shard's ragged part into the assembled arrays at value ``v_at``, row ``o_at``."""
    values[v_at:v_at + len(part_v)] = part_v
    offsets[o_at + 1:o_at + len(part_o)] = part_o[1:].astype(offsets.dtype) + v_at


def _load(directory: Path, shards: list[str], df: pd.DataFrame,
          vocabs: dict[str, IdVocab]) -> EncodedPairs:
    metas = []
    for name in shards:
        with np.load(directory / name, allow_pickle=False) as z:
            metas.append(z["meta"])
    m = np.array(metas, dtype=np.int64).reshape(len(shards), 3 + 2 * len(UNIT_NAMES))
    totals = m.sum(0)
    n_rows, n_tok = int(totals[0]), int(totals[1])
    off_dtype = lambda total: np.int32 if total < 2 ** 31 else np.int64  # noqa: E731
    first = np.load(directory / shards[0], allow_pickle=False) if shards else None
    dtype_of = lambda key, default: first[key].dtype if first is not None else default  # noqa: E731
    tok_v, tok_o = np.zeros(n_tok, dtype_of("tokens_v", np.int32)), np.zeros(n_rows + 1, off_dtype(n_tok))
    has_types = bool((m[:, 2] != TYPES_ABSENT).any())
    types_v = np.zeros(n_tok, np.uint8) if has_types else None
    unit_v = {n: np.zeros(int(totals[3 + i]), dtype_of(f"unit_{n}_v", np.int32)) for i, n in enumerate(UNIT_NAMES)}
    unit_o = {n: np.zeros(int(totals[3 + len(UNIT_NAMES) + i]) + 1, off_dtype(int(totals[3 + i])))
              for i, n in enumerate(UNIT_NAMES)}
    rows = {n: np.zeros(n_rows, np.int32) for n in UNIT_NAMES}
    ids = {n: np.zeros(n_rows, np.int64) for n in ID_FIELDS}
    if first is not None:
        first.close()
    at_row, at_tok = 0, 0
    at_unit = {n: [0, 0] for n in UNIT_NAMES}  # [value, row] positions
    for name, meta in zip(tqdm(shards, desc="load pairs", leave=False, mininterval=2), m):
        with np.load(directory / name, allow_pickle=False) as z:
            k = int(meta[0])
            _fill_ragged(tok_v, tok_o, at_tok, at_row, z["tokens_v"], z["tokens_o"])
            if meta[2] == TYPES_STORED:
                types_v[at_tok:at_tok + int(meta[1])] = z["types_v"]
            for n in UNIT_NAMES:
                v_at, r_at = at_unit[n]
                part_v = z[f"unit_{n}_v"]
                _fill_ragged(unit_v[n], unit_o[n], v_at, r_at, part_v, z[f"unit_{n}_o"])
                at_unit[n] = [v_at + len(part_v), r_at + len(z[f"unit_{n}_o"]) - 1]
                rows[n][at_row:at_row + k] = z[f"row_{n}"]
            for n in ID_FIELDS:
                ids[n][at_row:at_row + k] = z[f"id_{n}"]
            at_row, at_tok = at_row + k, at_tok + int(meta[1])
    if n_rows != len(df):
        raise ValueError(f"finetune: cache {directory} holds {n_rows} pairs, the frame has {len(df)}")
    return EncodedPairs(df["example_id"].to_numpy(dtype=object), Ragged(tok_v, tok_o),
                        Ragged(types_v, tok_o) if has_types else None,
                        {n: Ragged(unit_v[n], unit_o[n]) for n in UNIT_NAMES}, rows, ids,
                        {n: len(vocabs[n]) for n in ID_FIELDS})


def shard_names(n_rows: int, shard_pairs: int) -> list[tuple[str, int, int]]:
    return [(f"rows-{a:09d}-{min(a + shard_pairs, n_rows):09d}.npz", a, min(a + shard_pairs, n_rows))
            for a in range(0, n_rows, shard_pairs)]


def cache_dir_of(cache_dir: Path, df: pd.DataFrame, tokenizer_key: str, ts: TextSettings, cfg,
                 vocabs: dict[str, IdVocab]) -> Path:
    key = fingerprint(FORMAT, tokenizer_key, ts.__dict__, cfg.char_buckets, cfg.word_buckets,
                      {n: v.values for n, v in vocabs.items()}, frame_digest(df))
    return Path(cache_dir) / f"pairs-{key}"


def cached_pairs(cache_dir: Path, df: pd.DataFrame, tokenizer, tokenizer_key: str, ts: TextSettings,
                 cfg, vocabs: dict[str, IdVocab], shard_pairs: int = SHARD_PAIRS) -> EncodedPairs:
    """Encoded pairs from the sharded cache; missing shards are encoded and written first."""
    directory = cache_dir_of(cache_dir, df, tokenizer_key, ts, cfg, vocabs)
    done = directory / "done.json"
    if done.is_file():
        shards = json.loads(done.read_text())["shards"]
        if all((directory / s).is_file() for s in shards):
            return _load(directory, shards, df, vocabs)
    plan = shard_names(len(df), shard_pairs)
    missing = [(name, a, b) for name, a, b in plan if not (directory / name).is_file()]
    if missing:
        plans = {name: UnitPlan.of(df[text]) for name, text, _ in UNIT_FIELDS}
        for name, a, b in tqdm(missing, desc="encode pairs (shards)", leave=False):
            _write_shard(_encode_shard(df, a, b, tokenizer, ts, cfg, vocabs, plans), directory / name)
    directory.mkdir(parents=True, exist_ok=True)
    shards = [name for name, _, _ in plan]
    write_json({"format": FORMAT, "pairs": len(df), "shard_pairs": shard_pairs, "shards": shards}, done)
    return _load(directory, shards, df, vocabs)
