"""Entity retrieval: BM25 over training queries only; never the query itself or its own products."""
from __future__ import annotations

import numpy as np
import pandas as pd

from query_understanding.entity_retrieval import EntityRetriever, entity_arrays, own_candidates

ROWS = [  # query_id, query, product, label, locale
    ("q1", "apple watch band", "p1", "E", "us"),
    ("q1", "apple watch band", "p9", "S", "us"),
    ("q2", "apple watch band 44mm", "p2", "E", "us"),
    ("q2", "apple watch band 44mm", "p1", "S", "us"),  # shared with q1
    ("q3", "watch band leather", "p3", "S", "us"),
    ("q3", "watch band leather", "p4", "I", "us"),  # irrelevant: never an entity
    ("q4", "Apple  Watch Band", "p5", "E", "us"),  # same normalised text as q1
    ("q5", "apple watch band sport", "p6", "E", "us"),  # the held-out query
    ("q6", "correa apple watch", "p7", "E", "es"),  # another marketplace
]


def examples() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["query_id", "query", "product_id", "esci_label", "product_locale"])


def test_never_the_query_itself_nor_its_own_products():
    ex = examples()
    retriever = EntityRetriever(ex, ["q1", "q2", "q3", "q4", "q6"])
    queries = ex.drop_duplicates("query_id")[["query_id", "query", "product_locale"]]
    found = retriever.retrieve(queries, k=10, own_products=own_candidates(ex))
    own = own_candidates(ex)
    for qid, ents in zip(queries["query_id"], found):
        sources = {e.source_query_id for e in ents}
        assert qid not in sources
        assert not {(e.product_id, e.product_locale) for e in ents} & own[qid]
    q1 = dict(zip(queries["query_id"], found))["q1"]
    assert "q4" not in {e.source_query_id for e in q1}  # same normalised query counts as itself
    assert {e.product_id for e in q1} == {"p2", "p3"}  # p1 is q1's own product even via q2


def test_never_products_of_held_out_queries():
    ex = examples()
    held_out = {"q5", "q3"}
    retriever = EntityRetriever(ex, sorted(set(ex["query_id"]) - held_out))
    queries = ex.drop_duplicates("query_id")[["query_id", "query", "product_locale"]]
    held_products = set(ex.loc[ex["query_id"].isin(held_out), "product_id"])
    for ents in retriever.retrieve(queries, k=10, own_products=own_candidates(ex)):
        assert not {e.product_id for e in ents} & held_products
        assert not {e.source_query_id for e in ents} & held_out


def test_locale_gains_and_arrays():
    ex = examples()
    retriever = EntityRetriever(ex, ["q1", "q2", "q3", "q6"])
    q5 = ex[ex["query_id"] == "q5"].iloc[:1][["query_id", "query", "product_locale"]]
    (ents,) = retriever.retrieve(q5, k=3)
    assert all(e.product_locale == "us" for e in ents)  # q6 is Spanish: not engagement of this market
    assert ents[0].gain == 1.0 and all(0 < e.gain <= 1 for e in ents)
    s_gains = [e.gain for e in ents if e.product_id in ("p9", "p3")]
    assert s_gains and max(s_gains) <= 0.1  # an S product weighs at most a tenth of an E product
    rows, gains = entity_arrays([ents, []], {(f"p{i}", "us"): i for i in range(10)}, k=4)
    assert rows.shape == (2, 4) and (rows[1] == -1).all() and gains[1].sum() == 0
    assert list(rows[0, :len(ents)]) == [int(e.product_id[1:]) for e in ents]
    assert np.allclose(gains[0, :len(ents)], [e.gain for e in ents])
