"""Fuzzing the running server: schemathesis from our OpenAPI document, hypothesis hostile bodies.

Bounded (a few dozen examples per operation) so the suite stays within minutes.
schemathesis's pytest plugin does not support pytest 9 yet, so its strategies are
driven by hypothesis directly: one test per operation and generation mode.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import Server

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))

POSTS = [
    ("POST", "/predict"),
    ("POST", "/models/{name}/predict"),
    ("POST", "/models/{name}/versions/{version}/predict"),
    ("POST", "/softmax"),
    ("POST", "/v1/models/{name}:predict"),
    ("POST", "/v1/models/{name}/versions/{version}:predict"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("POST", "/models/{name}/reload"),
    ("POST", "/v2/repository/index"),
]
# Not fuzzed here: /v2/repository/models/{name}/load and /unload change what the shared
# server serves under the other tests' feet (tests/test_v2.py covers them on a server of
# their own).
OPERATIONS = [
    *POSTS,
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/models"),
    ("GET", "/models/{name}"),
    ("GET", "/models/{name}/versions/{version}"),
    ("GET", "/v1/models/{name}"),
    ("GET", "/v1/models/{name}/versions/{version}"),
    ("GET", "/v1/models/{name}/metadata"),
    ("GET", "/v1/models/{name}/versions/{version}/metadata"),
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{name}"),
    ("GET", "/v2/models/{name}/versions/{version}"),
    ("GET", "/v2/models/{name}/ready"),
    ("GET", "/v2/models/{name}/versions/{version}/ready"),
]


@pytest.fixture(scope="module")
def api_schema(server: Server) -> Any:
    """Our own OpenAPI document, as the running server publishes it."""
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def test_the_fuzzed_operations_are_all_the_documented_ones(api_schema: Any) -> None:
    documented = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert documented >= set(OPERATIONS)


#: Schema-valid bodies may still be refused (422) for what JSON Schema cannot say: rows of
#: the model's input_dim, equal-length logits rows. Every other default check applies.
EXCLUDED = [positive_data_acceptance]

#: Negative data exists only where a schema constrains something: not for free-string path
#: parameters (GETs), a bodiless reload, or V2 infer (JSON or binary tensors, both free-form).
NO_NEGATIVE = {
    ("POST", "/models/{name}/reload"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
}
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in POSTS if (m, p) not in NO_NEGATIVE
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES]
)
def test_operation_conforms_to_the_openapi_document(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        case.call_and_validate(excluded_checks=EXCLUDED)

    check()


# --- hostile bodies ---------------------------------------------------------------------

POST_PATHS = [
    "/predict",
    "/models/blobs/predict",
    "/models/blobs/versions/1/predict",
    "/softmax",
    "/v1/models/blobs:predict",
    "/v1/models/blobs/versions/1:predict",
    "/v2/models/blobs/infer",
    "/v2/models/blobs/versions/1/infer",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=40,
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "instances": json_values,
        "logits": json_values,
        "temperature": json_values,
        "calibrated": json_values,
        "format": json_values,
    },
)


def hostile_texts() -> st.SearchStrategy[bytes]:
    """Bodies a JSON encoder would never write: non-finite literals, duplicate keys, junk."""
    number = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1" * 400, "0x10"])
    return st.one_of(
        number.map(lambda n: f'{{"instances": [[{n}, 1]]}}'.encode()),
        number.map(lambda n: f'{{"logits": [{n}, 1]}}'.encode()),
        st.just(b'{"instances": [[1, 2]], "instances": [[1, 2, 3]]}'),
        st.integers(1, 2000).map(lambda d: b'{"logits": ' + b"[" * d + b"]" * d + b"}"),
        st.binary(max_size=200),
        st.text(max_size=50).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )


def assert_clean_answer(response: httpx.Response) -> None:
    assert response.status_code in {200, 400, 404, 413, 422}, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if response.status_code != 200:
        assert isinstance(body["error"], str)
        assert "Traceback" not in response.text
        assert "site-packages" not in response.text


@pytest.mark.parametrize("path", POST_PATHS)
def test_hostile_json_bodies_get_clean_4xx_answers(client: httpx.Client, path: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=json_values | shaped)
    def check(body: Any) -> None:
        assert_clean_answer(client.post(path, json=body))

    check()
    assert client.post("/predict", json={"instances": [[15.0, 0.0]]}).status_code == 200


@pytest.mark.parametrize("path", POST_PATHS)
def test_hostile_raw_bytes_get_clean_4xx_answers(client: httpx.Client, path: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=hostile_texts())
    def check(raw: bytes) -> None:
        assert_clean_answer(client.post(path, content=raw))

    check()
    assert client.post("/predict", json={"instances": [[15.0, 0.0]]}).status_code == 200
