"""Derive a strict JSON schema for KServe's InferenceService and ServingRuntime.

KServe's CRDs are not published on PyPI, but its Python SDK (the ``kserve`` wheel) is,
and the SDK's model classes are generated from the same Go API types as the CRDs: each
class lists its fields (``attribute_map``: Python name -> JSON key), their types
(``openapi_types``) and, in its setters, the fields that must not be ``None``. This
script reads those classes from the wheel *as text* (``ast``, nothing is imported or
installed) and writes ``kserve-<version>.schema.json`` beside itself:

- one ``$defs`` entry per KServe class reachable from ``V1beta1InferenceService`` and
  ``V1alpha1ServingRuntime``, closed (``additionalProperties: false``), with its required
  fields;
- Kubernetes types (``V1Container``, ``V1Probe``, ``V1ObjectMeta``, ...) as ``$ref``s into
  the strict Kubernetes definitions that ``kubernetes-validate`` ships
  (``https://kubernetes.io/api/_definitions.json``), so containers, probes and security
  contexts inside the KServe objects are checked as strictly as in a Deployment;
- ``status`` left out (manifests never set it); the few types the SDK names but does
  not define (KEDA triggers, KServe's ``V1alpha1WorkerSpec``) accepted as any object and
  listed under ``x-opaque-types``.

Usage (PyPI is the only network access)::

    pip download --no-deps --dest /tmp/kserve kserve==0.21.0
    python deploy/kserve/schema/derive.py /tmp/kserve/kserve-0.21.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
ROOTS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
}
KSERVE_PREFIXES = ("V1beta1", "V1alpha1", "V1alpha2")
#: Types of third-party APIs the SDK names but neither KServe nor Kubernetes defines.
OPAQUE_PREFIXES = ("GithubCom", "Knative", "NetUrl")
#: SDK names of Kubernetes quantities ("500m", "1Gi", 8); MetricQuantity is KServe's alias
#: of resource.Quantity, which the SDK names but does not generate.
QUANTITIES = {"ResourceQuantity", "V1beta1MetricQuantity"}
REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


class ModelClass:
    """One generated SDK class: JSON keys, their SDK types, required keys."""

    def __init__(self, name: str, types: dict[str, str], keys: dict[str, str], required: set[str]):
        self.name = name
        self.types = types
        self.keys = keys
        self.required = required


def read_classes(wheel: zipfile.ZipFile) -> dict[str, ModelClass]:
    """Every class of ``kserve/models/`` with ``openapi_types`` and ``attribute_map``."""
    classes: dict[str, ModelClass] = {}
    for info in wheel.infolist():
        if not re.fullmatch(r"kserve/models/[a-z0-9_]+\.py", info.filename):
            continue
        source = wheel.read(info).decode()
        for node in ast.parse(source).body:
            if not isinstance(node, ast.ClassDef):
                continue
            found: dict[str, dict[str, str]] = {}
            for statement in node.body:
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                    target = statement.targets[0]
                    if isinstance(target, ast.Name) and target.id in {
                        "openapi_types",
                        "attribute_map",
                    }:
                        found[target.id] = ast.literal_eval(statement.value)
            if set(found) == {"openapi_types", "attribute_map"}:
                required = set(REQUIRED.findall(ast.get_source_segment(source, node) or ""))
                classes[node.name] = ModelClass(
                    node.name, found["openapi_types"], found["attribute_map"], required
                )
    return classes


def k8s_definition(name: str, definitions: dict[str, Any]) -> str | None:
    """The Kubernetes definition an SDK type name stands for (``V1Probe`` -> core v1 Probe)."""
    if name in QUANTITIES:
        return "io.k8s.apimachinery.pkg.api.resource.Quantity"
    if name.startswith("K8sIoApi"):  # K8sIoApiAppsV1DeploymentStrategy
        match = re.fullmatch(r"K8sIoApi([A-Z][a-z]+)(V\d+(?:(?:alpha|beta)\d+)?)(\w+)", name)
        if match:
            group, version, kind = match.groups()
            candidate = f"io.k8s.api.{group.lower()}.{version.lower()}.{kind}"
            return candidate if candidate in definitions else None
    match = re.fullmatch(r"(V\d+(?:(?:alpha|beta)\d+)?)([A-Z]\w*)", name)
    if not match:
        return None
    suffix = f".{match.group(1).lower()}.{match.group(2)}"
    candidates = sorted(key for key in definitions if key.endswith(suffix))
    for preferred in ("io.k8s.api.core.", "io.k8s.apimachinery.pkg.apis.meta."):
        for key in candidates:
            if key.startswith(preferred):
                return key
    return candidates[0] if len(candidates) == 1 else None


class Deriver:
    """Turns SDK type strings into JSON schema, collecting the classes it reaches."""

    def __init__(self, classes: dict[str, ModelClass], definitions: dict[str, Any]):
        self.classes = classes
        self.definitions = definitions
        self.defs: dict[str, Any] = {}
        self.opaque: set[str] = set()

    def schema(self, sdk_type: str) -> dict[str, Any]:
        """The JSON schema of one SDK type string (``list[V1Container]``, ``dict(str, str)``)."""
        scalars = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
        if sdk_type in scalars:
            return {"type": scalars[sdk_type]}
        if sdk_type == "datetime":
            return {"type": "string", "format": "date-time"}
        if sdk_type == "object":
            return {}
        if match := re.fullmatch(r"list\[(.+)\]", sdk_type):
            return {"type": "array", "items": self.schema(match.group(1))}
        if match := re.fullmatch(r"dict\(str, (.+)\)", sdk_type):
            return {"type": "object", "additionalProperties": self.schema(match.group(1))}
        if sdk_type in self.classes and sdk_type.startswith(KSERVE_PREFIXES):
            self.add(sdk_type)
            return {"$ref": f"#/$defs/{sdk_type}"}
        definition = k8s_definition(sdk_type, self.definitions)
        if definition is not None:
            return {"$ref": f"{K8S_DEFINITIONS}#/$defs/{definition}"}
        if sdk_type.startswith((*OPAQUE_PREFIXES, *KSERVE_PREFIXES)):
            # A third-party type, or a KServe type the SDK names but did not generate.
            self.opaque.add(sdk_type)
            return {"type": "object"}
        raise SystemExit(f"cannot map SDK type {sdk_type!r} to a schema")

    def add(self, name: str, *, drop: frozenset[str] = frozenset()) -> None:
        """Define class ``name`` (and everything it refers to) under ``$defs``."""
        if name in self.defs:
            return
        model = self.classes[name]
        self.defs[name] = {}  # placeholder: recursion ends here
        properties = {
            model.keys[field]: self.schema(sdk_type)
            for field, sdk_type in sorted(model.types.items())
            if field not in drop
        }
        definition: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        required = sorted(model.keys[field] for field in model.required if field not in drop)
        if required:
            definition["required"] = required
        self.defs[name] = definition


def kubernetes_definitions() -> dict[str, Any]:
    """The newest strict Kubernetes definitions kubernetes-validate ships."""
    root = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    strict = [d for d in root.iterdir() if re.fullmatch(r"v[\d.]+-local-strict", d.name)]
    newest = max(strict, key=lambda d: tuple(int(p) for p in d.name[1:].split("-")[0].split(".")))
    data: dict[str, Any] = json.loads(newest.joinpath("_definitions.json").read_text())
    assert data["$id"] == K8S_DEFINITIONS, data["$id"]
    definitions: dict[str, Any] = data["$defs"]
    return definitions


def main(argv: list[str] | None = None) -> int:
    """Write the schema derived from the given kserve wheel."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="kserve-<version>-py3-none-any.whl")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)
    match = re.fullmatch(r"kserve-([^-]+)-.*\.whl", args.wheel.name)
    if not match:
        parser.error(f"not a kserve wheel: {args.wheel.name}")
    version = match.group(1)
    with zipfile.ZipFile(args.wheel) as wheel:
        classes = read_classes(wheel)
    deriver = Deriver(classes, kubernetes_definitions())
    kinds: dict[str, Any] = {}
    for (api_version, kind), name in ROOTS.items():
        deriver.add(name, drop=frozenset({"status"}))
        kinds[f"{api_version}/{kind}"] = {
            "allOf": [
                {"$ref": f"#/$defs/{name}"},
                {
                    "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}},
                    "required": ["apiVersion", "kind", "metadata", "spec"],
                },
            ]
        }
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:softmax-serving:kserve-{version}",
        "x-derived-from": {
            "package": f"kserve=={version}",
            "wheel": args.wheel.name,
            "sha256": hashlib.sha256(args.wheel.read_bytes()).hexdigest(),
            "classes": "kserve/models/*.py: openapi_types, attribute_map, required setters",
            "generator": "deploy/kserve/schema/derive.py",
        },
        "x-opaque-types": sorted(deriver.opaque),
        "x-kinds": kinds,
        "$defs": dict(sorted(deriver.defs.items())),
    }
    out = args.out_dir / f"kserve-{version}.schema.json"
    out.write_text(json.dumps(schema, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(deriver.defs)} KServe classes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
