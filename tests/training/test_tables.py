"""A user's CSV (``model_training.tables``): column kinds, missing values, the encoding
fitted on the training rows only, and the refusals, each naming the file, line and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_training.artifact import Column, InputSpec
from model_training.data import DataError
from model_training.tables import (
    MISSING,
    encode,
    feature_names,
    fit_columns,
    one_hot_inputs,
    read_table,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_numeric_columns_labels_and_names(tmp_path: Path) -> None:
    table = read_table(
        write(tmp_path, "height,weight,kind\n1.5,60,cat\n2,70,dog\n1,10,10\n0.5,5,2\n")
    )
    assert [c.name for c in table.columns] == ["height", "weight"]
    assert [c.kind for c in table.columns] == ["numeric", "numeric"]
    assert table.class_names == ("2", "10", "cat", "dog")  # numbers in numeric order, then text
    assert table.y.tolist() == [2, 3, 1, 0]
    columns = fit_columns(table, range(4))
    assert encode(table, columns).tolist() == [[1.5, 60.0], [2.0, 70.0], [1.0, 10.0], [0.5, 5.0]]
    assert feature_names(columns) == ["height", "weight"]


def test_the_label_column_can_be_any_column(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "y,a,b\n0,1,2\n1,3,4\n"), label_column="y")
    assert [c.name for c in table.columns] == ["a", "b"]
    assert encode(table, fit_columns(table, [0, 1])).tolist() == [[1.0, 2.0], [3.0, 4.0]]


PENGUINS = """island,bill,sex,species
Biscoe,40,male,Adelie
Dream,,female,Chinstrap
Biscoe,NA,NA,Adelie
Torgersen,44, ,Gentoo
Dream,NaN,male,Chinstrap
Atlantis,50,male,Gentoo
"""


def test_categorical_columns_and_missing_values_are_fitted_on_the_training_rows_only(
    tmp_path: Path,
) -> None:
    table = read_table(write(tmp_path, PENGUINS))
    assert [c.kind for c in table.columns] == ["categorical", "numeric", "categorical"]
    # Rows 0-4 train; row 5 (Atlantis, 50) is held out: it shapes nothing.
    island, bill, sex = fit_columns(table, [0, 1, 2, 3, 4])
    assert island == Column(
        name="island",
        kind="categorical",
        fill="Biscoe",
        vocabulary=["Biscoe", "Dream", "Torgersen"],
    )  # Biscoe and Dream twice each: the tie goes to the first
    assert bill == Column(name="bill", kind="numeric", fill=42.0)  # mean of 40 and 44
    assert sex == Column(name="sex", kind="categorical", fill="male", vocabulary=["female", "male"])
    x = encode(table, [island, bill, sex])
    assert x.tolist() == [
        [1, 0, 0, 0, 40, 0, 1, 0],
        [0, 1, 0, 0, 42, 1, 0, 0],  # bill empty: the training mean
        [1, 0, 0, 0, 42, 0, 1, 0],  # NA, NA: mean, most frequent
        [0, 0, 1, 0, 44, 0, 1, 0],  # " " is missing too
        [0, 1, 0, 0, 42, 0, 1, 0],  # NaN
        [0, 0, 0, 1, 50, 0, 1, 0],  # Atlantis, never seen in training: out of vocabulary
    ]
    assert feature_names([island, bill, sex]) == [
        "island=Biscoe",
        "island=Dream",
        "island=Torgersen",
        "island=<other>",
        "bill",
        "sex=female",
        "sex=male",
        "sex=<other>",
    ]
    assert one_hot_inputs([island, bill, sex]).tolist() == [1, 1, 1, 1, 0, 1, 1, 1]
    # What the service reads back: the columns describe exactly this input.
    spec = InputSpec(shape=[8], columns=[island, bill, sex])
    assert sum(c.width for c in spec.columns or []) == x.shape[1]


CODED = """zip,code,size,label
02134,1,1.5,x
10001,2,2,y
02134,3,NA,x
2134,1.0,1,y
,2,0.5,x
"""


def test_categorical_columns_read_numbers_as_their_text(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, CODED), categorical=["code", "zip"])
    assert [c.kind for c in table.columns] == ["categorical", "categorical", "numeric"]
    assert table.forced_categorical == ("zip", "code")  # file order
    assert table.source()["forced_categorical"] == ["zip", "code"]
    zip_code, code, size = fit_columns(table, range(5))
    # The cells' text: a leading zero stays, and 1 and 1.0 are two categories.
    assert zip_code == Column(
        name="zip", kind="categorical", fill="02134", vocabulary=["02134", "10001", "2134"]
    )
    assert code == Column(
        name="code", kind="categorical", fill="2", vocabulary=["1", "1.0", "2", "3"]
    )
    assert size == Column(name="size", kind="numeric", fill=1.25)
    assert encode(table, [zip_code, code, size]).tolist() == [
        [1, 0, 0, 0, 1, 0, 0, 0, 0, 1.5],
        [0, 1, 0, 0, 0, 0, 1, 0, 0, 2],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 1.25],
        [0, 0, 1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 0, 0, 0, 0, 1, 0, 0, 0.5],  # zip missing: the most frequent, 02134
    ]
    assert feature_names([zip_code])[:2] == ["zip=02134", "zip=10001"]
    plain = read_table(write(tmp_path, CODED))
    assert [c.kind for c in plain.columns] == ["numeric", "numeric", "numeric"]
    assert plain.source()["forced_categorical"] == []


def test_a_categorical_column_is_not_refused_for_a_stray_word(tmp_path: Path) -> None:
    rows = "".join(f"{i},{'xy'[i % 2]}\n" for i in range(30)) + "other,x\n"
    with pytest.raises(DataError, match="expected a number in column 'a'"):
        read_table(write(tmp_path, "a,label\n" + rows))
    table = read_table(write(tmp_path, "a,label\n" + rows), categorical=["a"])
    assert table.columns[0].kind == "categorical"


@pytest.mark.parametrize(
    ("categorical", "label", "message"),
    [
        (
            ["code", "colour"],
            None,
            "expected --categorical to name feature columns of {path} (['zip', 'code', "
            "'size']), received 'colour'",
        ),
        (
            ["label"],
            None,
            "expected --categorical to name feature columns of {path}, received the label "
            "column 'label' (its values are the classes already)",
        ),
        (
            ["zip"],
            "zip",
            "expected --categorical to name feature columns of {path}, received the label "
            "column 'zip' (its values are the classes already)",
        ),
    ],
)
def test_categorical_flag_rejects_unknown_columns_and_the_label_column(
    tmp_path: Path, categorical: list[str], label: str | None, message: str
) -> None:
    path = write(tmp_path, CODED)
    with pytest.raises(DataError) as raised:
        read_table(path, label, categorical)
    assert str(raised.value) == message.format(path=path)


def test_the_missing_markers_are_pandas_defaults() -> None:
    assert {"", "NA", "N/A", "NaN", "nan", "NULL", "null", "None", "<NA>", "#N/A"} <= MISSING
    assert "0" not in MISSING
    assert "?" not in MISSING


@pytest.mark.parametrize(
    ("text", "label", "message"),
    [
        ("", None, "empty file"),
        ("a,b,label\n", None, "data rows"),
        ("a,b,label\n1,2,x\n3,4,y\n", "kind", "label column named 'kind'"),
        (
            "a,b,label\n"
            + "".join(f"{i},{i * 1.5},{'xy'[i % 2]}\n" for i in range(30))
            + "3,tw0,y\n",
            None,
            "data.csv:32: expected a number in column 'b' (its other values are numbers), "
            "received 'tw0'",
        ),
        ("a,b,label\n1,2,x\n3,inf,y\n", None, "data.csv:3: expected a finite number"),
        ("a,b,label\n1,2,x\n3,4,x\n", None, "at least two classes"),
        ("a,b,label\n1,2,x\n3,4\n", None, "data.csv:3: expected 3 fields, received 2"),
        ("label\nx\ny\n", None, "at least one feature column"),
        ("a,b,label\n1,2,x\n3,4,NA\n", None, "data.csv:3: expected a label in column 'label'"),
        ("a,b,label\n1,,x\n3,NA,y\n", None, "expected values in column 'b'"),
        ("a,a,label\n1,2,x\n3,4,y\n", None, "unique, non-empty column names"),
    ],
)
def test_bad_tables_are_refused_saying_where(
    tmp_path: Path, text: str, label: str | None, message: str
) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_table(write(tmp_path, text), label)


def test_a_column_of_identifiers_is_refused(tmp_path: Path) -> None:
    rows = "".join(f"id{i},{i % 5},{'xy'[i % 2]}\n" for i in range(40))
    table = read_table(write(tmp_path, "name,a,label\n" + rows))
    with pytest.raises(DataError, match="a different one in every row"):
        fit_columns(table, range(30))


def test_a_column_missing_in_every_training_row_is_refused(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "a,b,label\n1,,x\n2,,y\n3,5,x\n"))
    with pytest.raises(DataError, match="column 'b' in the training rows"):
        fit_columns(table, [0, 1])
    assert np.isnan(table.columns[1].numbers).sum() == 2  # type: ignore[union-attr]
