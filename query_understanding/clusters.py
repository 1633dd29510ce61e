"""Product title clusters: TF-IDF (reduced by truncated SVD, i.e. LSA), then k-means into fine
clusters (PT, product type) and k-means of the fine centroids into coarse clusters (QC, query
category), so every PT sits in one QC as in a category tree. k-means straight on the sparse
TF-IDF puts a quarter of the sample into one catch-all cluster; on the LSA vectors it does not.
Label-free (titles only), so fitting on every product leaks no judgement.

Each cluster's top terms (largest centroid weights) are written out so a person can read what a
"product type" is; on a multilingual catalogue some clusters are simply one marketplace's language.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize as l2_normalize

from data.product_text import clean_field
from data.text_tokens import tokenize


@dataclass
class TitleClusters:
    assignments: pd.DataFrame  # product_id, product_locale, pt, qc
    pt_terms: pd.DataFrame  # cluster, qc, size, top_terms
    qc_terms: pd.DataFrame  # cluster, size, n_pt, top_terms
    n_pt: int
    n_qc: int

    def series(self, column: str) -> pd.Series:
        """Cluster id indexed by (product_id, product_locale)."""
        return self.assignments.set_index(["product_id", "product_locale"])[column]


def _top_terms(weights: np.ndarray, vocab: np.ndarray, n: int) -> str:
    order = np.argsort(-weights, kind="mergesort")[:n]
    return " ".join(vocab[i] for i in order if weights[i] > 0)


def fit_title_clusters(products: pd.DataFrame, n_pt: int, n_qc: int, seed: int = 0,
                       max_features: int = 20000, svd_dims: int = 100,
                       top_terms: int = 8) -> TitleClusters:
    titles = clean_field(products["product_title"])
    if (titles != "").sum() < 2:
        raise ValueError("clusters: products.parquet has fewer than 2 non-empty product_title values")
    # max_df drops words in most titles ("for", "with", "de"): they would top every centroid.
    vec = TfidfVectorizer(analyzer=tokenize, max_features=max_features, sublinear_tf=True,
                          max_df=0.3, min_df=1, dtype=np.float32)
    x = vec.fit_transform(titles)
    vocab = vec.get_feature_names_out()
    n_pt = min(n_pt, x.shape[0])
    n_qc = min(n_qc, n_pt)
    dims = min(svd_dims, x.shape[1] - 1, x.shape[0] - 1)
    z = l2_normalize(TruncatedSVD(dims, random_state=seed).fit_transform(x)) if dims >= 2 else x
    fine = KMeans(n_clusters=n_pt, random_state=seed, n_init=3).fit(z)
    pt = fine.labels_
    coarse = KMeans(n_clusters=n_qc, random_state=seed, n_init=3).fit(l2_normalize(fine.cluster_centers_))
    qc_of_pt = coarse.labels_
    qc = qc_of_pt[pt]

    def mean_terms(members: np.ndarray) -> str:  # top terms of the members' mean TF-IDF row
        mean = np.asarray(x[members].mean(axis=0)).ravel() if members.any() else np.zeros(len(vocab))
        return _top_terms(mean, vocab, top_terms)

    pt_rows = [{"cluster": c, "qc": int(qc_of_pt[c]), "size": int((pt == c).sum()),
                "top_terms": mean_terms(pt == c)} for c in range(n_pt)]
    qc_rows = [{"cluster": c, "size": int((qc == c).sum()), "n_pt": int((qc_of_pt == c).sum()),
                "top_terms": mean_terms(qc == c)} for c in range(n_qc)]
    assignments = products[["product_id", "product_locale"]].copy()
    assignments["pt"], assignments["qc"] = pt.astype(int), qc.astype(int)
    return TitleClusters(assignments.reset_index(drop=True), pd.DataFrame(pt_rows),
                         pd.DataFrame(qc_rows), n_pt, n_qc)
