"""Version labels, canary fraction and shadow, read from a model's serving.json and kept
in step with the disk like its versions."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.errors import LabelNotFound, VersionNotFound
from service.repository.policy import VersionPolicy
from service.repository.registry import ModelRegistry
from service.repository.rollout import ROLLOUT, Rollout, read_rollout
from tests.conftest import TrainedRepository
from tests.versions import install_version


@pytest.fixture
def repo(trained: TrainedRepository, tmp_path: Path) -> Path:
    """Versions 1, 2 and 3 of blobs."""
    for version in (1, 2, 3):
        install_version(trained.repository / "blobs" / "1", tmp_path / "models", "blobs", version)
    return tmp_path / "models"


def write(repo: Path, content: Any) -> None:
    path = repo / "blobs" / ROLLOUT
    text = content if isinstance(content, str) else json.dumps(content)
    path.write_text(text)
    stat = path.stat()  # a new mtime even within the file system's time resolution
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def served(repo: Path, policy: str = "all") -> ModelRegistry:
    registry = ModelRegistry(repo, policy=VersionPolicy.parse(policy))
    registry.load_all()
    return registry


def test_no_file_means_no_labels_no_canary_no_shadow(repo: Path) -> None:
    assert read_rollout(repo / "blobs") == Rollout()
    registry = served(repo)
    with pytest.raises(LabelNotFound, match=r"expected a label of model 'blobs' \(\[\]\)"):
        registry.get("blobs", label="stable")


def test_a_label_serves_the_version_it_names_and_stable_serves_the_rest(repo: Path) -> None:
    write(repo, {"version_labels": {"stable": 1, "canary": 3}})
    registry = served(repo)
    assert registry.get("blobs", label="stable").version == 1
    assert registry.get("blobs", label="canary").version == 3
    assert registry.get("blobs").version == 1  # the stable version serves the rest
    with pytest.raises(LabelNotFound, match=r"\(\['canary', 'stable'\]\), received 'beta'"):
        registry.get("blobs", label="beta")
    write(repo, {"version_labels": {"canary": 2}})
    registry.poll()
    assert registry.get("blobs").version == 3  # no stable version: the newest


def test_labels_are_reread_when_the_file_changes(repo: Path) -> None:
    write(repo, {"version_labels": {"stable": 1}})
    registry = served(repo)
    write(repo, {"version_labels": {"stable": 2}})
    registry.poll()
    assert registry.get("blobs", label="stable").version == 2
    (repo / "blobs" / ROLLOUT).unlink()
    registry.poll()
    assert registry.rollout("blobs") == Rollout()


@pytest.mark.parametrize(
    ("content", "logged"),
    [
        ({"version_labels": {"stable": 7}}, "label 'stable' names version 7"),
        ("{not json", "expected serving.json to be JSON"),
        ({"version_labels": {"stable": "one"}}, "version_labels.stable"),
        ({"labels": {"stable": 1}}, "labels: Extra inputs are not permitted"),
        ({"version_labels": {"1x": 1}}, "starting with a letter"),
        ({"canary_fraction": 0.1}, "expected a 'canary' label for canary_fraction 0.1"),
        ({"version_labels": {"canary": 2}, "canary_fraction": 1.5}, "canary_fraction"),
        ({"shadow": {"version": 9}}, "the shadow names version 9"),
        ({"shadow": {}}, "expected the shadow to name one version"),
        ({"shadow": {"label": "beta"}}, "expected the shadow's label 'beta' among the labels"),
        ({"shadow": {"version": 2, "fraction": -0.5}}, "shadow.fraction"),
    ],
)
def test_a_file_that_cannot_be_used_is_refused_and_the_previous_rollout_kept(
    repo: Path, caplog: pytest.LogCaptureFixture, content: Any, logged: str
) -> None:
    write(repo, {"version_labels": {"stable": 1}})
    registry = served(repo)
    write(repo, content)
    with caplog.at_level(logging.ERROR, logger="service.repository.registry"):
        registry.poll()
    assert logged in caplog.text
    assert "keeping its previous rollout" in caplog.text
    assert registry.get("blobs", label="stable").version == 1


def test_a_label_of_a_version_the_policy_does_not_serve_is_refused(repo: Path) -> None:
    write(repo, {"version_labels": {"stable": 1}})
    registry = served(repo, "latest")  # serves version 3 only
    with pytest.raises(LabelNotFound):
        registry.get("blobs", label="stable")
    write(repo, {"version_labels": {"stable": 3}})
    registry.poll()
    assert registry.get("blobs", label="stable").version == 3


def test_a_labelled_version_that_leaves_is_not_served_by_its_label(repo: Path) -> None:
    write(repo, {"version_labels": {"stable": 2}})
    registry = served(repo)
    shutil.rmtree(repo / "blobs" / "2")
    registry.poll()
    with pytest.raises(VersionNotFound):
        registry.get("blobs", label="stable")


def test_the_shadow_is_named_by_version_or_label(repo: Path) -> None:
    by_label = Rollout.model_validate(
        {"version_labels": {"canary": 2}, "shadow": {"label": "canary", "fraction": 0.5}}
    )
    assert by_label.shadow_version == 2
    assert Rollout.model_validate({"shadow": {"version": 1}}).shadow_version == 1
    assert Rollout().shadow_version is None
