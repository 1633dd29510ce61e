import pandas as pd
import pytest

from esci.artifacts import atomic_path, write_parquet, write_predictions


def test_failed_write_leaves_neither_artifact_nor_temp_file(tmp_path):
    target = tmp_path / "x.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert pd.read_parquet(target)["a"].tolist() == [1]  # old artifact untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_prediction_schema_is_enforced(tmp_path):
    good = pd.DataFrame({"example_id": ["1"], "query_id": ["q"], "product_id": ["p"],
                         "product_locale": ["us"], "p_E": [.7], "p_S": [.2], "p_C": [.05],
                         "p_I": [.05], "score": [.7]})
    write_predictions(good, tmp_path / "t.parquet", oof=False)
    with pytest.raises(ValueError, match="missing columns"):
        write_predictions(good, tmp_path / "o.parquet", oof=True)
    with pytest.raises(ValueError, match="summing to 1"):
        write_predictions(good.assign(p_E=.9), tmp_path / "b.parquet", oof=False)
    assert not (tmp_path / "b.parquet").exists()
