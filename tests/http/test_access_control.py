"""Who may do what: model control is off by default; with API keys, pages open, data keyed."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.conftest import TrainedRepository, in_process

KEY = "a-key-of-sixteen-chars-or-more"
ONE_ROW = {"instances": [[15.0, 0.0]]}
CONTROL = [
    "/models/blobs/reload",
    "/v2/repository/models/blobs/load",
    "/v2/repository/models/blobs/unload",
]


@pytest.mark.parametrize("path", CONTROL)
def test_model_control_is_refused_by_default_and_names_the_setting(
    trained: TrainedRepository, path: str
) -> None:
    with in_process(Settings(model_repository=trained.repository)) as client:
        response = client.post(path)
        assert response.status_code == 403
        error = response.json()["error"]
        assert "SERVICE_MODEL_CONTROL=true" in error
        assert "received" in error
        # nothing changed: still ready, still predicting
        assert client.get("/health/ready").status_code == 200
        assert client.post("/predict", json=ONE_ROW).status_code == 200


def test_model_control_when_on_unloads_and_loads_again(trained: TrainedRepository) -> None:
    settings = Settings(model_repository=trained.repository, model_control=True, poll_interval=0)
    with in_process(settings) as client:
        assert client.post("/v2/repository/models/blobs/unload").status_code == 200
        assert client.get("/health/ready").status_code == 503
        unloaded = client.post("/predict", json=ONE_ROW)
        assert unloaded.status_code == 503
        assert "unloaded on request" in unloaded.json()["error"]
        assert client.post("/v2/repository/models/blobs/load").status_code == 200
        assert client.get("/health/ready").status_code == 200
        reloaded = client.post("/models/blobs/reload")
        assert reloaded.status_code == 200
        assert reloaded.json()["versions"][0]["state"] == "AVAILABLE"
        # loading a model that is served changes nothing; an unknown one is 404
        assert client.post("/v2/repository/models/blobs/load").status_code == 200
        assert client.get("/v2/models/blobs/versions/1/ready").status_code == 200
        assert client.post("/v2/repository/models/nope/load").status_code == 404


@pytest.mark.parametrize("path", CONTROL)
def test_model_control_with_api_keys_needs_a_key(trained: TrainedRepository, path: str) -> None:
    settings = Settings(
        model_repository=trained.repository, model_control=True, api_keys=[KEY], poll_interval=0
    )
    with in_process(settings) as client:
        anonymous = client.post(path)
        assert anonymous.status_code == 401
        assert "expected an API key" in anonymous.json()["error"]
        assert client.get("/health/ready").status_code == 200
        allowed = client.post(path, headers={"Authorization": f"Bearer {KEY}"})
        assert allowed.status_code == 200, allowed.text


def test_with_api_keys_the_pages_are_open_and_the_data_is_not(trained: TrainedRepository) -> None:
    settings = Settings(model_repository=trained.repository, api_keys=[KEY])
    with in_process(settings) as client:
        for page in ("/", "/docs", "/openapi.json", "/docs/static/swagger-ui.css"):
            assert client.get(page).status_code == 200, page
        for data in ("/models", "/models/blobs", "/v2/models/blobs", "/v1/models/blobs"):
            assert client.get(data).status_code == 401, data
        assert client.post("/predict", json=ONE_ROW).status_code == 401
        keyed = client.post("/predict", json=ONE_ROW, headers={"X-API-Key": KEY})
        assert keyed.status_code == 200
