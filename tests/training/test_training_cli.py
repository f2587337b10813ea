"""``python -m model_training``: the real command, run as users run it."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_breast_cancer, load_iris

from tests.conftest import TrainedRepository, python_argv, subprocess_env

TRAIN = ("python", "-m", "model_training")
FAST = ("--epochs", "3", "--batch-size", "32", "--samples", "200", "--test-size", "50", "--quiet")


#: What TensorFlow and LiteRT write by themselves: absl-style C++ log lines ("I0000 00:00:...",
#: "E0000 ...") and the notices a new user took for errors.
TENSORFLOW_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|oneDNN|absl::InitializeLog|use_unbounded_threadpool|XNNPACK"
    r"|cuda|cuDNN|cuBLAS|cuFFT|TensorRT|cpu_feature_guard",
    re.MULTILINE,
)


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*python_argv(TRAIN), *args],
        cwd=cwd,
        env=subprocess_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_default_training_reaches_99_percent_test_accuracy(trained: TrainedRepository) -> None:
    match = re.search(r"test loss (\S+)\s+test accuracy (\S+)", trained.stdout)
    assert match, trained.stdout
    assert float(match.group(2)) >= 0.99
    metadata = json.loads((trained.repository / "blobs" / "1" / "metadata.json").read_text())
    assert metadata["metrics"]["test_accuracy"] == pytest.approx(float(match.group(2)), abs=5e-5)
    assert metadata["metrics"]["test_samples"] == 250
    training = metadata["training"]
    assert (training["epochs"], training["batch_size"], training["learning_rate"]) == (30, 5, 1e-3)
    assert training["validation_split"] == 0.2
    assert training["data"]["centers"] == [[15, 0], [15, 15], [0, 15], [30, 15]]
    assert training["data"]["n_samples"] == 1000


def test_default_training_writes_all_three_files_with_hashes(trained: TrainedRepository) -> None:
    version = trained.repository / "blobs" / "1"
    assert sorted(p.name for p in version.iterdir()) == [
        "metadata.json",
        "model.keras",
        "model.tflite",
        "report",
    ]
    metadata = json.loads((version / "metadata.json").read_text())
    for key in (
        "format_version",
        "name",
        "version",
        "input_dim",
        "feature_names",
        "class_names",
        "created_at",
        "metrics",
        "training",
        "libraries",
        "files",
    ):
        assert key in metadata
    assert set(metadata["files"]) == {"model.keras", "model.tflite"}
    assert metadata["libraries"]["keras"].startswith("3.")


def test_if_missing_leaves_an_existing_model_alone(trained: TrainedRepository) -> None:
    result = run("--if-missing", "--quiet", cwd=trained.workdir)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert sorted(p.name for p in (trained.repository / "blobs").iterdir()) == ["1"]


def test_training_twice_writes_consecutive_versions_and_no_temporary_files(
    tmp_path: Path,
) -> None:
    for _ in range(2):
        result = run("--model-repository", "repo", "--name", "tiny", *FAST, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "repo" / "tiny").iterdir()) == ["1", "2"]
    assert "wrote tiny version 2" in result.stdout


def test_training_on_a_csv_uses_its_header_and_labels(tmp_path: Path) -> None:
    rows = ["sepal,petal,species"]
    for i in range(60):
        kind = ["setosa", "versicolor", "virginica"][i % 3]
        rows.append(f"{i % 3 * 5 + (i % 7) * 0.1},{i % 3 * 3 - (i % 5) * 0.1},{kind}")
    (tmp_path / "flowers.csv").write_text("\n".join(rows) + "\n")
    result = run(
        "--data",
        "flowers.csv",
        "--name",
        "flowers",
        "--test-size",
        "0.25",
        "--epochs",
        "2",
        "--quiet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metadata = json.loads((tmp_path / "models/flowers/1/metadata.json").read_text())
    assert metadata["feature_names"] == ["sepal", "petal"]
    assert metadata["class_names"] == ["setosa", "versicolor", "virginica"]
    assert metadata["input_dim"] == 2
    assert metadata["metrics"]["test_samples"] == 15


@pytest.mark.parametrize(
    ("file", "name"),
    [("my-flowers.v2.csv", "my-flowers.v2"), ("my flowers.csv", "table"), (".csv", "table")],
)
def test_a_csv_model_is_named_after_its_file_or_table(tmp_path: Path, file: str, name: str) -> None:
    rows = ["sepal,petal,species"] + [
        f"{i % 3 + i % 7 * 0.1},{i % 5},{'abc'[i % 3]}" for i in range(30)
    ]
    (tmp_path / file).write_text("\n".join(rows) + "\n")
    result = run("--data", file, "--epochs", "1", "--no-report", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"wrote {name} version 1" in result.stdout
    assert [p.name for p in (tmp_path / "models").iterdir()] == [name]


def write_sklearn_csv(loader: Callable[[], Any], path: Path, label: str) -> None:
    """One of scikit-learn's bundled tables (no download) as a CSV, the label column last."""
    bunch = loader()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*bunch.feature_names, label])
        for row, target in zip(bunch.data.tolist(), bunch.target.tolist(), strict=True):
            writer.writerow([*row, bunch.target_names[target]])


def test_a_small_table_trains_with_default_flags(tmp_path: Path) -> None:
    write_sklearn_csv(load_iris, tmp_path / "iris.csv", "species")  # 150 rows
    result = run("--data", "iris.csv", "--label-column", "species", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    print(result.stdout)  # the held-out accuracy, for the record (pytest -s)
    assert "wrote iris version 1" in result.stdout  # named after the file
    metadata = json.loads((tmp_path / "models/iris/1/metadata.json").read_text())
    assert metadata["class_names"] == ["setosa", "versicolor", "virginica"]
    assert metadata["metrics"]["test_samples"] == 30  # 20 % of 150
    assert metadata["training"]["validation_samples"] == 24  # 20 % of the other 120


def test_a_wide_unscaled_table_trains_and_exports_with_default_flags(tmp_path: Path) -> None:
    # 30 features up to about 4,000: logits in the hundreds, whose float32 round-off moved
    # the served probabilities by 1.5e-5 with this seed (on an AVX-512 machine), and the
    # export's self-check refused the model after training.
    write_sklearn_csv(load_breast_cancer, tmp_path / "cancer.csv", "diagnosis")  # 569 rows
    result = run("--data", "cancer.csv", "--seed", "6", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    version = tmp_path / "models/cancer/1"
    assert {"model.keras", "model.tflite"} <= {p.name for p in version.iterdir()}
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["input_dim"] == 30
    assert metadata["metrics"]["test_samples"] == 114  # 20 % of 569


def test_tensorflows_own_log_lines_stay_off_stderr_unless_verbose(tmp_path: Path) -> None:
    env = subprocess_env()
    del env["TF_CPP_MIN_LOG_LEVEL"]  # as a user's shell has it: unset
    trained = run(*FAST, "--no-report", cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr
    assert not TENSORFLOW_LOG_LINE.search(trained.stderr), trained.stderr
    exported = run(
        *("export", "models/blobs/1/model.keras", "--name", "again"), cwd=tmp_path, env=env
    )
    assert exported.returncode == 0, exported.stderr
    assert not TENSORFLOW_LOG_LINE.search(exported.stderr), exported.stderr

    verbose = run(*FAST, "--no-report", "--verbose", cwd=tmp_path, env=env)
    assert verbose.returncode == 0, verbose.stderr
    assert TENSORFLOW_LOG_LINE.search(verbose.stderr)  # the converter's own lines, at least


@pytest.mark.parametrize(
    ("csv", "extra", "message"),
    [
        ("", (), "empty file"),
        ("a,b,label\n1,2,x\n3,4,y\n", ("--label-column", "kind"), "label column named 'kind'"),
        (
            "a,b,label\n"
            + "".join(f"{i},{i / 4},{'xy'[i % 2]}\n" for i in range(40))
            + "1,oops,x\n",
            (),
            "bad.csv:42: expected a number in column 'b'",
        ),
        ("a,b,label\n1,2,x\n3,4,x\n", (), "at least two classes"),
        (
            "a,b,label\n1,2,x\n3,4,y\n",
            ("--categorical", "b", "--categorical", "a,zip"),
            "expected --categorical to name feature columns of bad.csv (['a', 'b']), "
            "received 'zip'",
        ),
        (
            "a,b,label\n1,2,x\n3,4,y\n",
            ("--categorical", "a,label"),
            "expected --categorical to name feature columns of bad.csv, received the label "
            "column 'label'",
        ),
    ],
)
def test_bad_csv_exits_1_with_one_line_and_writes_nothing(
    tmp_path: Path, csv: str, extra: tuple[str, ...], message: str
) -> None:
    (tmp_path / "bad.csv").write_text(csv)
    result = run("--data", "bad.csv", *extra, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*"))


def test_missing_csv_file_exits_1(tmp_path: Path) -> None:
    result = run("--data", "absent.csv", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot read" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--epochs", "0"),
        ("--batch-size", "x"),
        ("--learning-rate", "-1"),
        ("--bogus",),
        ("--validation-split", "1.5"),
        ("--categorical", "a"),  # without a CSV
        ("--architecture", "linear"),  # without a CSV: the blobs keep their recipe
        ("--data", "t.csv", "--architecture", "deep"),
    ],
)
def test_bad_arguments_exit_2_with_usage(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert not (tmp_path / "models").exists()


def test_invalid_model_name_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    result = run("--name", "../escape", *FAST, cwd=tmp_path)
    assert result.returncode == 1
    assert "model name" in result.stderr
    assert not any(tmp_path.iterdir())
