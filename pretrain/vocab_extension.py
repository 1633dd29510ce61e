"""Vocabulary coverage: find what a tokenizer maps to [UNK] in the corpus, and extend it.

MiniLM's English WordPiece vocabulary turns most Japanese words into one [UNK] each
("ワイヤレスイヤホン bluetooth" -> [CLS] [UNK] blue ##tooth [SEP]): it holds single kana but not
the '##' continuations a word needs. The fix adds the characters to blame for an [UNK] (kana/CJK
in an [UNK] word, or a character that is [UNK] on its own), and every kana/CJK character the
normaliser would change, as a token of its own
(``tokenizer.add_tokens``), so such words become character sequences; the caller resizes the
embeddings and MLM learns the new rows. Characters already in the vocabulary keep their
pretrained id. Added tokens are matched before the tokenizer's normaliser (``normalized=False``),
so the uncased normaliser cannot strip the dakuten of 'ガ'. A sentencepiece backbone that covers
the scripts (XLM-R, InfoXLM) gets next to nothing added, and keeps its multi-character pieces.
"""
from __future__ import annotations

import unicodedata
from collections import Counter

import numpy as np
import pandas as pd
from tokenizers import AddedToken

CHUNK = 256  # texts per tokenizer call


def _unk_spans(tokenizer, texts: list[str]):
    """Per text: (number of tokens, list of (start, end) character spans that became [UNK])."""
    if not tokenizer.is_fast:
        raise ValueError(f"vocab coverage: {type(tokenizer).__name__} is not a fast tokenizer "
                         "(offsets are needed to locate [UNK] spans)")
    unk = tokenizer.unk_token_id
    for i in range(0, len(texts), CHUNK):
        enc = tokenizer(texts[i:i + CHUNK], add_special_tokens=False, return_offsets_mapping=True,
                        truncation=False, verbose=False)
        for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"]):
            spans = sorted({tuple(o) for t, o in zip(ids, offsets) if t == unk})
            yield len(ids), spans


def unk_rates(tokenizer, texts: list[str], locales: list[str]) -> pd.DataFrame:
    """Per locale: tokens, [UNK] tokens, their rate, and the share of characters inside [UNK].

    The character share is the telling one: WordPiece spends one [UNK] on a whole word.
    """
    rows = []
    for (n_tok, spans), text, loc in zip(_unk_spans(tokenizer, texts), texts, locales):
        unk_chars = sum(len(text[s:e].replace(" ", "")) for s, e in spans)
        rows.append((loc, n_tok, len(spans), unk_chars, len(text.replace(" ", ""))))
    df = pd.DataFrame(rows, columns=["locale", "tokens", "unk_tokens", "unk_chars", "chars"])
    out = df.groupby("locale")[["tokens", "unk_tokens", "unk_chars", "chars"]].sum()
    out.loc["all"] = out.sum()
    out["unk_token_rate"] = out["unk_tokens"] / out["tokens"].clip(lower=1)
    out["unk_char_rate"] = out["unk_chars"] / out["chars"].clip(lower=1)
    return out.reset_index()


# Scripts written without spaces, where a word is a run of characters: WordPiece needs '##'
# continuations for every character of it, and one missing one turns the word into [UNK].
UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "FULLWIDTH", "HALFWIDTH")


def _unspaced(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(UNSPACED_SCRIPTS)


def _mangled(tokenizer, ch: str) -> bool:
    """The tokenizer's normaliser turns ``ch`` into another character (uncased WordPiece strips
    the dakuten: 'ガイド' (guide) reads as 'カイト' (kite))."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if normalizer is None:
        return False
    return normalizer.normalize_str(ch).strip() not in (ch, ch.lower())


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def uncovered_characters(tokenizer, texts: list[str], min_count: int = 1) -> list[str]:
    """Characters the tokenizer cannot represent, most frequent first (ties by code point).

    Those are the characters of [UNK] spans that are [UNK] on their own or belong to an
    unspaced script (kana, CJK, Hangul), plus the unspaced-script characters that the
    normaliser changes into others.
    """
    in_unk: Counter = Counter()
    seen: Counter = Counter()
    for (_, spans), text in zip(_unk_spans(tokenizer, texts), texts):
        for s, e in spans:
            in_unk.update(ch for ch in text[s:e] if not ch.isascii() and not ch.isspace())
        seen.update(ch for ch in text if not ch.isascii())
    # Inside an [UNK] word, only the characters to blame: those [UNK] on their own, and those of
    # unspaced scripts (the word lacks their '##' forms). An 'á' there is not to blame (the
    # normaliser turns it into 'a'), and splitting it out would break every Spanish word with it.
    counts = Counter({ch: n for ch, n in in_unk.items()
                      if _unspaced(ch) or tokenizer.unk_token_id in _ids(tokenizer, ch)})
    added = tokenizer.get_added_vocab()  # already split out before the normaliser
    for ch, n in seen.items():
        if ch not in counts and ch not in added and _unspaced(ch) and _mangled(tokenizer, ch):
            counts[ch] = n
    kept = [(ch, n) for ch, n in counts.items() if n >= min_count]
    return [ch for ch, _ in sorted(kept, key=lambda kv: (-kv[1], kv[0]))]


def extend_tokenizer(tokenizer, texts: list[str], min_count: int = 1, max_tokens: int = 10000) -> list[str]:
    """Add the uncovered characters to ``tokenizer`` in place; returns the characters added.

    A character already in the vocabulary (WordPiece holds single kana) is registered as an
    added token too, which makes the tokenizer split it out, but it keeps its pretrained id.
    """
    chars = uncovered_characters(tokenizer, texts, min_count)[:max_tokens]
    if chars:
        tokenizer.add_tokens([AddedToken(ch, normalized=False, single_word=False) for ch in chars])
    return chars


def coverage_report(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per locale: [UNK] token and character rates before and after the extension."""
    cols = ["unk_token_rate", "unk_char_rate"]
    out = before[["locale", "tokens"] + cols].merge(after[["locale", "tokens"] + cols],
                                                    on="locale", suffixes=("_before", "_after"))
    return out.replace([np.inf, -np.inf], np.nan)
