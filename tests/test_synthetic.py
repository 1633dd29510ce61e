import pandas as pd

from data.esci_io import load_esci
from data.synthetic import generate, write_synthetic


def test_synthetic_is_deterministic_by_seed_and_valid_official_layout(tmp_path):
    a = generate(50, 5, seed=3)
    b = generate(50, 5, seed=3)
    c = generate(50, 5, seed=4)
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    assert not a[0]["query"].equals(c[0]["query"])
    data = load_esci(write_synthetic(tmp_path / "syn", 50, 5, seed=3))
    assert len(data.examples) == len(a[0]) and set(data.examples["split"]) == {"train", "test"}
    assert "SYNTHETIC" in (tmp_path / "syn" / "SOURCE.md").read_text()


def test_synthetic_labels_follow_query_overlap():
    ex, pr, _ = generate(30, 8, seed=0)
    df = ex.merge(pr, on=["product_id", "product_locale"])
    overlap = df.apply(lambda r: len(set(r["query"].split()) & set(r["product_title"].split())), axis=1)
    mean = overlap.groupby(df["esci_label"]).mean()
    assert mean["E"] > mean["S"] > mean["C"] > mean["I"]
    assert overlap[df["esci_label"] == "E"].min() >= 3
