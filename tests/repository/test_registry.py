"""The registry's lifecycle, in process, on real versions: policy, refusals, swaps, unloading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelNotFound, VersionNotFound, VersionRefused
from service.repository.policy import VersionPolicy
from service.repository.registry import ModelRegistry, State
from service.settings import Settings
from tests.conftest import TrainedRepository
from tests.versions import bad_hash, install_version, wrong_metadata

PROBE = np.array([[15.0, 0.0], [29.5, 14.2]], dtype=np.float32)


@pytest.fixture
def source(trained: TrainedRepository) -> Path:
    """The trained version every test copies."""
    return trained.repository / "blobs" / "1"


def repository(source: Path, root: Path, *versions: int) -> Path:
    repo = root / "models"
    for version in versions:
        install_version(source, repo, "blobs", version)
    return repo


def states(registry: ModelRegistry, name: str = "blobs") -> dict[int, State]:
    return {s.version: s.state for s in registry.status(name, missing_ok=True)}


# --- the policy string ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("latest", "latest"),
        ("latest:1", "latest"),
        ("latest:3", "latest:3"),
        (" all ", "all"),
        ("specific:3,1", "specific:1,3"),
        ("specific: 2", "specific:2"),
    ],
)
def test_policy_parses_tf_serving_policies(text: str, canonical: str) -> None:
    assert str(VersionPolicy.parse(text)) == canonical
    assert Settings(version_policy=text).version_policy == canonical


@pytest.mark.parametrize("text", ["", "newest", "latest:0", "latest:x", "specific:", "specific:0"])
def test_policy_refuses_anything_else_saying_what_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        VersionPolicy.parse(text)
    with pytest.raises(ValueError, match="version_policy"):
        Settings(version_policy=text)


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ("latest", [3]),
        ("latest:2", [2, 3]),
        ("latest:5", [1, 2, 3]),
        ("all", [1, 2, 3]),
        ("specific:1,3", [1, 3]),
        ("specific:7", []),
    ],
)
def test_policy_decides_the_served_versions(
    source: Path, tmp_path: Path, policy: str, served: list[int]
) -> None:
    registry = ModelRegistry(
        repository(source, tmp_path, 1, 2, 3), policy=VersionPolicy.parse(policy)
    )
    registry.load_all()
    assert registry.versions("blobs") == served
    assert sorted(states(registry)) == served  # nothing else was even loaded
    if served:
        assert registry.get("blobs").version == max(served)


# --- refusals ---------------------------------------------------------------------------


def test_broken_newest_version_leaves_the_previous_one_serving(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = repository(source, tmp_path, 1)
    install_version(source, repo, "blobs", 2, bad_hash)
    registry = ModelRegistry(repo)
    registry.load_all()
    assert registry.versions("blobs") == [1]
    status = {s.version: s for s in registry.status("blobs")}
    assert status[2].state is State.END
    assert "model.tflite sha256 mismatch: expected" in status[2].error
    assert "refusing model 'blobs' version 2" in caplog.text

    attempt = status[2].load_id
    registry.poll()  # unchanged files: not tried again
    assert {s.version: s for s in registry.status("blobs")}[2].load_id == attempt

    shutil.rmtree(repo / "blobs" / "2")
    install_version(source, repo, "blobs", 2)  # repaired: tried again, and served
    registry.poll()
    assert registry.versions("blobs") == [2]
    assert states(registry) == {1: State.END, 2: State.AVAILABLE}


def test_reload_retries_a_refused_version_and_says_why_it_failed(
    source: Path, tmp_path: Path
) -> None:
    repo = repository(source, tmp_path, 1)
    registry = ModelRegistry(repo)
    registry.load_all()
    install_version(source, repo, "blobs", 2, wrong_metadata)
    for _ in range(2):  # a reload tries again even though nothing changed
        with pytest.raises(VersionRefused) as refused:
            registry.reload("blobs")
        message = str(refused.value)
        assert "version 2 is at UNAVAILABLE state" in message
        assert "expected model.tflite to map (batch, 2) to (batch, 5)" in message
        assert "version 1 keeps serving" in message
    assert registry.get("blobs").version == 1
    with pytest.raises(ModelNotFound, match="'nope'"):
        registry.reload("nope")


# --- swaps and unloading ----------------------------------------------------------------


def test_request_in_flight_keeps_its_version_until_it_lets_go(source: Path, tmp_path: Path) -> None:
    repo = repository(source, tmp_path, 1)
    registry = ModelRegistry(repo)
    seen: list[tuple[int, State]] = []
    registry.subscribe(lambda name, status: seen.append((status.version, status.state)))
    registry.load_all()
    in_flight = registry.get("blobs")  # what a request holds while it is answered
    before = in_flight.runtime.logits(PROBE).copy()

    install_version(source, repo, "blobs", 2)
    registry.poll()
    assert registry.get("blobs").version == 2  # new requests: the new version
    assert states(registry) == {1: State.UNLOADING, 2: State.AVAILABLE}
    assert in_flight.version == 1
    np.testing.assert_array_equal(in_flight.runtime.logits(PROBE), before)  # still works

    del in_flight  # the request answered: its version is unloaded
    assert states(registry) == {1: State.END, 2: State.AVAILABLE}
    assert seen == [
        (1, State.LOADING),
        (1, State.AVAILABLE),
        (2, State.LOADING),
        (2, State.AVAILABLE),
        (1, State.UNLOADING),
        (1, State.END),
    ]


def test_removed_version_is_unloaded_and_latest_falls_back(source: Path, tmp_path: Path) -> None:
    repo = repository(source, tmp_path, 1, 2)
    registry = ModelRegistry(repo)
    registry.load_all()
    assert registry.versions("blobs") == [2]
    shutil.rmtree(repo / "blobs" / "2")
    registry.poll()
    assert registry.versions("blobs") == [1]
    assert states(registry) == {1: State.AVAILABLE, 2: State.END}
    with pytest.raises(VersionNotFound):
        registry.get("blobs", "2")

    shutil.rmtree(repo / "blobs")  # the whole model
    registry.poll()
    assert registry.names() == []
    with pytest.raises(ModelNotFound):
        registry.get("blobs")


def test_missing_repository_keeps_what_is_served(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = repository(source, tmp_path, 1)
    registry = ModelRegistry(repo)
    registry.load_all()
    repo.rename(tmp_path / "elsewhere")  # an unmounted volume, say
    registry.poll()
    assert registry.versions("blobs") == [1]
    assert "is missing; serving what is loaded" in caplog.text


def test_unload_holds_until_reload(source: Path, tmp_path: Path) -> None:
    repo = repository(source, tmp_path, 1)
    registry = ModelRegistry(repo)
    registry.load_all()
    registry.unload("blobs")
    registry.unload("never-heard-of")  # like Triton: nothing to do
    registry.poll()  # polling does not bring it back
    assert registry.names() == []
    assert not registry.ready
    assert [s.state for s in registry.reload("blobs")] == [State.AVAILABLE]
    assert registry.versions("blobs") == [1]
    assert registry.ready


def test_reload_of_a_model_with_nothing_to_serve_is_refused(source: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(
        repository(source, tmp_path, 1), policy=VersionPolicy.parse("specific:7")
    )
    registry.load_all()
    with pytest.raises(
        VersionRefused, match=r"policy 'specific:7' serves, received versions \[1\]"
    ):
        registry.reload("blobs")
