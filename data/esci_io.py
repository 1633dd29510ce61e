"""Read the official ESCI layout from a directory and validate it.

Files: ``shopping_queries_dataset_examples``, ``shopping_queries_dataset_products`` (``.parquet``
or ``.csv``) and, when present, ``shopping_queries_dataset_sources.csv``. Every problem found is
raised as one line naming the file, the column and a few offending rows.

Memory is bounded for the full dataset (2.6M examples, 1.8M products): string columns stay in
pandas' Arrow-backed ``str`` dtype (no per-row Python objects), and key checks run in Arrow
compute on one joined key string per row instead of pandas MultiIndex tuples.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from esci.artifacts import LABELS

EXAMPLES_STEM = "shopping_queries_dataset_examples"
PRODUCTS_STEM = "shopping_queries_dataset_products"
SOURCES_STEM = "shopping_queries_dataset_sources"
EXAMPLE_COLUMNS = ["example_id", "query", "query_id", "product_id", "product_locale", "esci_label"]
PRODUCT_COLUMNS = ["product_id", "product_locale", "product_title"]
PRODUCT_TEXT_COLUMNS = ["product_title", "product_description", "product_bullet_point",
                        "product_brand", "product_color"]
MAX_ROWS_SHOWN = 5


class EsciDataError(ValueError):
    """Bad input data; the message is one line naming file, column and rows."""


@dataclass
class EsciData:
    examples: pd.DataFrame  # one row per judged pair; ids as str; split in {train, test}
    products: pd.DataFrame  # one row per (product_id, product_locale) referenced by examples


def _fail(file: Path, column: str, problem: str, rows) -> None:
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_SHOWN])
    more = f" (+{len(rows) - MAX_ROWS_SHOWN} more)" if len(rows) > MAX_ROWS_SHOWN else ""
    raise EsciDataError(f"{file}: column '{column}': {problem}; rows [{shown}]{more}")


def find_file(data_dir: Path, stem: str, required: bool = True) -> Path | None:
    for suffix in (".parquet", ".csv"):
        candidate = data_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    if required:
        raise EsciDataError(f"{data_dir}: no {stem}.parquet or {stem}.csv")
    return None


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            available = set(pq.read_schema(path).names)
            cols = [c for c in columns if c in available] if columns else None
            return pd.read_parquet(path, columns=cols)
        return pd.read_csv(path, dtype=str, keep_default_na=True)
    except EsciDataError:
        raise
    except Exception as exc:  # pyarrow / csv parse errors: keep them one line
        raise EsciDataError(f"{path}: cannot be read: {type(exc).__name__}: {exc}".replace("\n", " "))


def _ids_as_str(df: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Integer or string ids become strings, so ids join whatever type the file stored."""
    s = df[column]
    text = s.astype(str).str.strip()
    nulls = s.isna() | (text == "")
    if nulls.any():
        _fail(path, column, "empty id", df.index[nulls])
    if pd.api.types.is_float_dtype(s):
        if not np.all(np.mod(s.to_numpy(), 1) == 0):
            _fail(path, column, "non-integer numeric id", df.index[np.mod(s.to_numpy(), 1) != 0])
        text = s.astype("int64").astype(str)
    return text


def _require(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    for col in columns:
        if col not in df.columns:
            _fail(path, col, f"required column missing (have: {sorted(df.columns)})", [])


def read_examples(data_dir: Path) -> tuple[pd.DataFrame, Path]:
    path = find_file(data_dir, EXAMPLES_STEM)
    wanted = EXAMPLE_COLUMNS + ["split", "small_version", "large_version"]
    df = _read(path, wanted).reset_index(drop=True)
    _require(df, EXAMPLE_COLUMNS, path)
    for col in ("example_id", "query_id", "product_id", "product_locale"):
        df[col] = _ids_as_str(df, col, path)

    query = df["query"].astype("string")
    empty = query.isna() | (query.str.strip() == "")
    if empty.any():
        _fail(path, "query", "empty query", df.index[empty])
    df["query"] = query.astype(str)

    split = df["split"].astype("string").str.strip().str.lower() if "split" in df else None
    df["split"] = (split.fillna("train").replace("", "train") if split is not None else "train")
    label = df["esci_label"].astype("string").str.strip()
    unlabeled_ok = label.isna() & (df["split"] == "test")  # an unlabelled test split is allowed
    bad = ~label.isin(list(LABELS)) & ~unlabeled_ok
    if bad.any():
        values = sorted(set(label[bad].fillna("<null>").astype(str)))[:5]
        _fail(path, "esci_label", f"label outside E/S/C/I {values}", df.index[bad])
    codes, uniques = pd.factorize(label)  # 4 shared str objects, not one per row
    df["esci_label"] = pd.Series(np.append(np.asarray(uniques, dtype=object), None)[codes],
                                 index=df.index, dtype=object)

    dup = df["example_id"].duplicated(keep=False)
    if dup.any():
        _fail(path, "example_id", "duplicate example_id", df.index[dup])
    dup = df.duplicated(["query_id", "product_id", "product_locale"], keep=False)
    if dup.any():
        _fail(path, "query_id,product_id,product_locale",
              "duplicate (query_id, product_id, product_locale)", df.index[dup])
    return df, path


def read_products(data_dir: Path) -> tuple[pd.DataFrame, Path]:
    path = find_file(data_dir, PRODUCTS_STEM)
    df = _read(path, ["product_id", "product_locale"] + PRODUCT_TEXT_COLUMNS).reset_index(drop=True)
    _require(df, PRODUCT_COLUMNS, path)
    for col in ("product_id", "product_locale"):
        df[col] = _ids_as_str(df, col, path)
    dup = df.duplicated(["product_id", "product_locale"], keep=False)
    if dup.any():
        _fail(path, "product_id,product_locale", "duplicate (product_id, product_locale)", df.index[dup])
    for col in PRODUCT_TEXT_COLUMNS:  # Arrow-backed str (missing = NaN): no per-row Python objects
        if col not in df:
            df[col] = pd.Series(np.nan, index=df.index, dtype="str")
        elif df[col].dtype != "str":
            df[col] = df[col].astype("str")
    return df, path


def read_sources(data_dir: Path) -> pd.DataFrame | None:
    path = find_file(data_dir, SOURCES_STEM, required=False)
    if path is None:
        return None
    df = _read(path)
    _require(df, ["query_id", "source"], path)
    df["query_id"] = _ids_as_str(df, "query_id", path)
    return df[["query_id", "source"]].drop_duplicates("query_id")


def _arrow(s: pd.Series) -> pa.ChunkedArray:
    arr = s.array.__arrow_array__() if hasattr(s.array, "__arrow_array__") else pa.array(s.astype(str))
    return (arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])).cast(pa.large_string())


def _product_key(df: pd.DataFrame) -> pa.ChunkedArray:
    """One string per row for (product_id, product_locale): hashed by Arrow, not as Python tuples."""
    return pc.binary_join_element_wise(_arrow(df["product_id"]), _arrow(df["product_locale"]),
                                      pa.scalar("\x1f", pa.large_string()))


def _isin(keys: pa.ChunkedArray, known: pa.ChunkedArray) -> np.ndarray:
    return pc.is_in(keys, value_set=known.combine_chunks()).to_numpy(zero_copy_only=False)


def load_esci(data_dir: str | Path, subset: str = "all") -> EsciData:
    """Read, validate and normalise one official-layout directory."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EsciDataError(f"{data_dir}: data directory does not exist")
    examples, ex_path = read_examples(data_dir)
    products, pr_path = read_products(data_dir)

    if subset not in ("all", "small", "large"):
        raise EsciDataError(f"config data.subset: {subset!r} is not one of all, small, large")
    if subset != "all":
        flag = f"{subset}_version"
        if flag not in examples:
            _fail(ex_path, flag, f"required by data.subset={subset}", [])
        examples = examples[examples[flag].astype(float) == 1].reset_index(drop=True)

    ex_key, pr_key = _product_key(examples), _product_key(products)
    missing = ~_isin(ex_key, pr_key)
    if missing.any():
        _fail(ex_path, "product_id", f"product missing from {pr_path.name}", examples.index[missing])

    sources = read_sources(data_dir)
    examples["query_source"] = (examples["query_id"].map(sources.set_index("query_id")["source"])
                                if sources is not None else None)
    used = _isin(pr_key, ex_key)
    del ex_key, pr_key
    if not used.all():  # filtering copies every text column: only when something is dropped
        products = products[used].reset_index(drop=True)
    cols = ["example_id", "query_id", "query", "product_id", "product_locale", "esci_label",
            "split", "query_source"]
    return EsciData(examples=examples[cols], products=products)
