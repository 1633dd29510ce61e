"""Language-aware word tokens for lexical features: words for spaced scripts, character
bigrams for Japanese/Chinese runs (which have no spaces to split on)."""
from __future__ import annotations

import re
import unicodedata

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]+|[^\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_NUMBER_UNIT = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?!x\b)([a-z]{0,4})")  # "20 x 40": x is no unit


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").lower()


def tokenize(text: str) -> list[str]:
    out: list[str] = []
    for run in _TOKEN.findall(normalize(text)):
        if _CJK.match(run):
            out.extend([run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)])
        else:
            out.append(run)
    return out


def char_ngrams(text: str, n: int = 3) -> set[str]:
    s = f" {' '.join(normalize(text).split())} "
    return {s[i:i + n] for i in range(max(1, len(s) - n + 1))}


def numbers_with_units(text: str) -> set[str]:
    """'0.5cc', '20 x 40', '1 inch' -> {'0.5cc', '20', '40', '1inch'}: numbers, unit glued on."""
    return {num.replace(",", ".") + unit for num, unit in _NUMBER_UNIT.findall(normalize(text))}
