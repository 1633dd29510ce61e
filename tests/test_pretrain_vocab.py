"""Vocabulary coverage: MiniLM's WordPiece maps Japanese to [UNK]; the extension fixes it."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from esci.backbones import minilm_dir
from pretrain.vocab_extension import extend_tokenizer, uncovered_characters, unk_rates

JP = "<jp> ワイヤレスイヤホン bluetooth ガイド 鑑定"


@pytest.fixture
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(minilm_dir())


def test_minilm_maps_japanese_words_to_unk(minilm_tokenizer):
    assert minilm_tokenizer.tokenize("ワイヤレスイヤホン bluetooth") == ["[UNK]", "blue", "##tooth"]


def test_extension_covers_every_character_and_keeps_pretrained_ids(minilm_tokenizer):
    tok = minilm_tokenizer
    before_ids = {ch: tok.convert_tokens_to_ids(ch) for ch in "ワイ"}  # single kana are in the vocab
    size = len(tok)
    added = extend_tokenizer(tok, [JP, "<us> Plain English text, nothing missing."])
    assert set("ワイヤレスホンガド鑑") <= set(added)
    assert not any(ch.isascii() for ch in added)
    ids = tok(JP)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.tokenize("ワイヤレスイヤホン bluetooth")[:3] == ["ワ", "イ", "ヤ"]
    assert tok.tokenize("bluetooth")[-1] == "##tooth"  # English untouched
    assert {ch: tok.convert_tokens_to_ids(ch) for ch in "ワイ"} == before_ids
    assert len(tok) == size + sum(tok.convert_tokens_to_ids(c) >= size for c in added)
    # matched before the uncased normaliser, which would strip the dakuten: ガ stays ガ
    assert tok.tokenize("ガ") == ["ガ"] and tok.convert_tokens_to_ids("ガ") != tok.convert_tokens_to_ids("カ")


def test_unk_rates_per_locale_before_and_after(minilm_tokenizer):
    texts = [JP, "<us> wireless earbuds bluetooth", "<es> auriculares inalámbricos"]
    locales = ["jp", "us", "es"]
    before = unk_rates(minilm_tokenizer, texts, locales).set_index("locale")
    # 'ワイヤレスイヤホン' (9 chars) and '鑑' are [UNK], of 27 non-space characters
    assert before.loc["jp", "unk_char_rate"] == pytest.approx(10 / 27)
    assert before.loc["jp", "unk_tokens"] == 2 and before.loc["us", "unk_token_rate"] == 0
    extend_tokenizer(minilm_tokenizer, texts)
    after = unk_rates(minilm_tokenizer, texts, locales).set_index("locale")
    assert after.loc["jp", "unk_token_rate"] == 0 and after.loc["all", "unk_chars"] == 0
    assert uncovered_characters(minilm_tokenizer, texts) == []


def test_extension_leaves_accented_latin_to_the_normaliser(minilm_tokenizer):
    """An [UNK] Spanish word is not blamed on its 'á': splitting 'á' out would break every
    Spanish word that has one (the uncased normaliser reads 'á' as 'a')."""
    tok = minilm_tokenizer
    texts = ["<es> necesitarás☃ canción"]  # one [UNK] word holding both
    added = extend_tokenizer(tok, texts)
    assert "☃" in added and "á" not in added
    assert tok.tokenize("necesitarás") == AutoTokenizer.from_pretrained(minilm_dir()).tokenize("necesitarás")
