"""Every weak-label rule of query understanding, derived from ESCI judgements (no human QU labels).

Query words are the NFKC-lower-cased query split on whitespace; a word's *key* drops everything
but letters and digits, so "L'Oréal," and "l'oréal" agree. A span of words matches a value when
the concatenated keys are equal ("power acoustik" = "Power Acoustik" = "poweracoustik").

* NER (BIO over words): BRAND / COLOR where a word span matches the brand / colour of a product
  judged E or S for that query (longest span first, BRAND before COLOR on ties); SIZE for a
  number with a unit ("0.5cc", "1 inch", "20 x 40", "20x40cm"). Queries with no E/S product
  have no NER label. Known gap: a brand inside an unspaced CJK run is not found.
* TW: a word weighs 1 when its key occurs in a title of the query's E products (whole token; for
  CJK words, as a substring, since CJK titles have no spaces), else 0. No E product: masked.
* PT / QC: the title clusters (clusters.py) of the query's E products; no E product: masked.
* Intent (brand lookup, Target's store lookup analogue): the query has a BRAND entity; the
  per-token intent head gets this label on every word.
"""
from __future__ import annotations

import re
import unicodedata

import pandas as pd

from data.text_tokens import tokenize

TAGS = ("O", "B-BRAND", "I-BRAND", "B-COLOR", "I-COLOR", "B-SIZE", "I-SIZE")
TAG_INDEX = {t: i for i, t in enumerate(TAGS)}
IGNORE = -100  # label of words (or sub-tokens) that carry no target

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_DIGIT = re.compile(r"\d")
# Corporate suffixes dropped from a brand so "Scosche Industries Inc" still matches "scosche industries".
_BRAND_SUFFIXES = {"inc", "llc", "ltd", "co", "corp", "corporation", "company", "gmbh", "official",
                   "store", "株式会社"}
_COLOR_SPLIT = re.compile(r"[/,&+|]")
_MAX_COLOR_WORDS = 3  # longer "colour" values are variant names ("Standard 3GB+32GB (S-DIN 8inch)")

_UNITS = ("mm|cm|m|km|in|inch|inches|ft|feet|foot|yd|yard|yards|oz|fl|floz|lb|lbs|pound|pounds|"
          "mg|g|gr|kg|ml|cl|l|ltr|liter|liters|litre|litres|litro|litros|cc|gal|gallon|gallons|qt|"
          "w|kw|v|volt|volts|watt|watts|amp|amps|mah|ah|gb|tb|mb|hz|khz|mhz|ghz|"
          "pack|pk|pcs|pc|piece|pieces|count|ct|sheets|"
          "metros|metro|pulgadas|pulgada|cms|個|枚|本|袋|箱|足|組|入|ミリ|センチ|メートル|リットル")
_NUM = r"\d+(?:[.,]\d+)?(?:/\d+)?"
_NUM_RE = re.compile(rf"{_NUM}")
_NUM_UNIT_RE = re.compile(rf"{_NUM}(?:{_UNITS})")
_DIMS_RE = re.compile(rf"{_NUM}(?:{_UNITS})?[x×*]{_NUM}(?:{_UNITS})?")
_UNIT_RE = re.compile(rf"(?:{_UNITS})\.?")
_TIMES = {"x", "×", "*"}
_EDGE_PUNCT = ",;:()[]{}\"'"


def normalize(text) -> str:
    return unicodedata.normalize("NFKC", "" if text is None or pd.isna(text) else str(text)).lower()


def query_words(query: str) -> list[str]:
    return normalize(query).split()


def word_key(word: str) -> str:
    return _NON_WORD.sub("", word)


def _value_key(value: str, digits: bool = True) -> str:
    key = word_key(normalize(value))
    ok = len(key) >= 2 and _LETTER.search(key) and (digits or not _DIGIT.search(key))
    return key if ok else ""


def brand_keys(brand) -> set[str]:
    """Keys a query span may equal to name this brand: the brand, and without corporate suffixes."""
    words = normalize(brand).split()
    if not words:
        return set()
    variants = {" ".join(words)}
    while words and word_key(words[-1]) in _BRAND_SUFFIXES:
        words = words[:-1]
        variants.add(" ".join(words))
    return {k for k in map(_value_key, variants) if k}


def color_keys(color) -> set[str]:
    """The colour value and its parts ("Black/Red" -> black, red, blackred); short, digit-free values."""
    text = normalize(color)
    parts = [text] + _COLOR_SPLIT.split(text)
    return {k for p in parts if 0 < len(p.split()) <= _MAX_COLOR_WORDS
            for k in [_value_key(p, digits=False)] if k}


def _match_spans(keys: list[str], values: dict[str, str]) -> list[tuple[int, int, str]]:
    """(start, end exclusive, type) of word spans whose joined keys are a value key."""
    found = []
    for i in range(len(keys)):
        if not keys[i]:
            continue
        joined = ""
        for j in range(i, len(keys)):
            joined += keys[j]
            if keys[j] and joined in values:
                found.append((i, j + 1, values[joined]))
    return found


def size_spans(words: list[str]) -> list[tuple[int, int, str]]:
    """Numbers with units: '0.5cc', '20x40cm' (one word); '1 inch', '20 x 40 cm' (several)."""
    w = [x.strip(_EDGE_PUNCT) for x in words]
    spans, i = [], 0
    while i < len(w):
        if _NUM_UNIT_RE.fullmatch(w[i]) or _DIMS_RE.fullmatch(w[i]):
            end = i + 1
        elif _NUM_RE.fullmatch(w[i]):
            end = i
            if i + 2 < len(w) and w[i + 1] in _TIMES and (_NUM_RE.fullmatch(w[i + 2])
                                                           or _NUM_UNIT_RE.fullmatch(w[i + 2])):
                end = i + 3
                if _NUM_RE.fullmatch(w[i + 2]) and end < len(w) and _UNIT_RE.fullmatch(w[end]):
                    end += 1
            elif i + 1 < len(w) and _UNIT_RE.fullmatch(w[i + 1]):
                end = i + 2
        else:
            end = i
        if end > i:
            spans.append((i, end, "SIZE"))
            i = end
        else:
            i += 1
    return spans


def ner_tags(words: list[str], brands, colors) -> list[str]:
    """BIO tags of ``words`` given the brands and colours of the query's E/S products."""
    keys = [word_key(x) for x in words]
    values = {k: "COLOR" for c in colors for k in color_keys(c)}
    values.update({k: "BRAND" for b in brands for k in brand_keys(b)})  # BRAND wins a shared key
    priority = {"BRAND": 0, "COLOR": 1}
    spans = sorted(_match_spans(keys, values), key=lambda s: (s[0] - s[1], priority[s[2]], s[0]))
    tags = ["O"] * len(words)
    for start, end, kind in spans + size_spans(words):  # longest first; SIZE only on free words
        if all(t == "O" for t in tags[start:end]):
            tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    return tags


def title_vocab(titles) -> tuple[set[str], str]:
    vocab, joined = set(), []
    for title in titles:
        text = normalize(title)
        vocab |= {word_key(x) for x in text.split()} | {word_key(t) for t in tokenize(text)}
        joined.append(word_key(text))
    return vocab - {""}, " ".join(joined)


def term_weights(words: list[str], e_titles) -> list[int]:
    """1 / 0 per word (IGNORE for punctuation-only words); all IGNORE without an E title."""
    titles = [t for t in e_titles if isinstance(t, str) and t]
    if not titles:
        return [IGNORE] * len(words)
    vocab, joined = title_vocab(titles)
    out = []
    for word in words:
        key = word_key(word)
        if not key:
            out.append(IGNORE)
        elif key in vocab or (_CJK.search(key) and key in joined):
            out.append(1)
        else:
            out.append(0)
    return out


def brand_intent(tags: list[str]) -> int:
    return int(any(t.endswith("BRAND") for t in tags))


def entity_spans(words: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(type, text) of each entity in BIO ``tags``; an I- without its B- starts a new entity."""
    out, current, kind = [], [], None
    for word, tag in zip(words, list(tags) + ["O"] * (len(words) - len(tags))):
        if tag.startswith("B-") or (tag.startswith("I-") and tag[2:] != kind):
            if current:
                out.append((kind, " ".join(current)))
            current, kind = [word], tag[2:]
        elif tag.startswith("I-"):
            current.append(word)
        else:
            if current:
                out.append((kind, " ".join(current)))
            current, kind = [], None
    if current:
        out.append((kind, " ".join(current)))
    return out


def build_labels(examples: pd.DataFrame, products: pd.DataFrame, pt_of: pd.Series,
                 qc_of: pd.Series) -> pd.DataFrame:
    """One row per query: words, NER tags, TW weights, brand intent, PT / QC cluster lists.

    ``pt_of`` / ``qc_of``: cluster id indexed by (product_id, product_locale).
    Columns: query_id, query, product_locale, words, ner (list[str] or None), tw (list[int]),
    intent (int or -1), pt, qc (list[int], empty when masked), has_e, has_es.
    """
    key = ["product_id", "product_locale"]
    prod = products.set_index(key)[["product_title", "product_brand", "product_color"]]
    df = examples.join(prod, on=key)
    where = pd.MultiIndex.from_frame(df[key])
    df["pt"] = pt_of.reindex(where).to_numpy()
    df["qc"] = qc_of.reindex(where).to_numpy()
    # Plain lists, grouped by hand: a pandas groupby over 10^5 small queries costs minutes.
    cols = {c: df[c].astype(object).tolist() for c in ("query_id", "query", "product_locale", "esci_label",
                                                        "product_title", "product_brand", "product_color",
                                                        "pt", "qc")}
    groups: dict = {}
    for i, qid in enumerate(cols["query_id"]):
        groups.setdefault(qid, []).append(i)
    present = lambda v: v is not None and not pd.isna(v)  # noqa: E731
    rows = []
    for qid in sorted(groups):
        idx = groups[qid]
        words = query_words(cols["query"][idx[0]])
        e = [i for i in idx if cols["esci_label"][i] == "E"]
        es = [i for i in idx if cols["esci_label"][i] in ("E", "S")]
        tags = None
        if es:
            tags = ner_tags(words, [cols["product_brand"][i] for i in es if present(cols["product_brand"][i])],
                            [cols["product_color"][i] for i in es if present(cols["product_color"][i])])
        rows.append({
            "query_id": qid, "query": cols["query"][idx[0]], "product_locale": cols["product_locale"][idx[0]],
            "words": words, "ner": tags, "tw": term_weights(words, [cols["product_title"][i] for i in e]),
            "intent": brand_intent(tags) if es else -1,
            "pt": sorted({int(cols["pt"][i]) for i in e if present(cols["pt"][i])}),
            "qc": sorted({int(cols["qc"][i]) for i in e if present(cols["qc"][i])}),
            "has_e": bool(e), "has_es": bool(es),
        })
    return pd.DataFrame(rows)
