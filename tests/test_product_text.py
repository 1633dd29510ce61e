import pandas as pd
import pytest

from data.product_text import render_products


def _products():
    return pd.DataFrame({
        "product_id": ["a", "b"], "product_locale": ["us", "jp"],
        "product_title": ["Red <b>Mug</b>", "ワイヤレスイヤホン"],
        "product_brand": ["Acme", None], "product_color": [None, "黒"],
        "product_bullet_point": ["dishwasher safe\nholds 12 oz", None],
        "product_description": ["<p>Great&nbsp;mug &amp; more</p><br/>", None],
    })


def test_html_is_stripped_nulls_skipped_and_fields_ordered():
    text = render_products(_products(), sep=" | ")
    assert text[0] == "Red Mug | Acme | dishwasher safe holds 12 oz | Great mug & more"
    assert text[1] == "ワイヤレスイヤホン | 黒"


def test_field_order_separator_truncation_and_locale_marker():
    text = render_products(_products(), fields=["brand", "title"], sep=" [SEP] ",
                           max_field_chars=3, locale_marker=True)
    assert text[0] == "<us> Acm [SEP] Red"
    assert text[1] == "<jp> ワイヤ"


def test_unknown_field_is_rejected():
    with pytest.raises(ValueError, match="unknown field"):
        render_products(_products(), fields=["title", "price"])
