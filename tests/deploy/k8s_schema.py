"""Offline validation of Kubernetes manifests with ``jsonschema``, no cluster and no network.

Core kinds (ConfigMap, CronJob, Namespace, ...) are checked against the Kubernetes JSON schemas
that the ``kubernetes-validate`` package bundles, in their strict variant (unknown fields are
errors, as ``kubectl apply`` with server-side field validation reports them). The Dask operator's
kinds (DaskCluster, DaskWorkerGroup, DaskJob) are checked against the openAPIV3Schema of the
CustomResourceDefinitions that the installed ``dask-kubernetes`` ships in its Helm chart, turned
into JSON Schema the way the API server reads a structural schema: ``nullable`` allows null, an
object with ``properties`` accepts no other keys unless ``x-kubernetes-preserve-unknown-fields``,
and ``metadata`` is the ObjectMeta of the Kubernetes schemas.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

K8S_VERSIONS = ("1.30", kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version()))
CRD_DIR = "deployment/helm/dask-kubernetes-operator/crds"
DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = f"{DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
DASK_GROUP = "kubernetes.dask.org"


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document in ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_errors(doc: dict[str, Any], version: str = K8S_VERSIONS[0]) -> list[str]:
    """Schema violations of one manifest, as ``path: message`` lines (empty when valid)."""
    if doc.get("apiVersion", "").startswith(f"{DASK_GROUP}/"):
        validator = jsonschema.Draft202012Validator(crd_schema(doc["kind"]), registry=_registry(version))
        return [f"{_path(err.absolute_path)}: {err.message}" for err in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{_path(err.path)}: {err.message}"]
    return []


@functools.cache
def crd_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema per Dask operator kind, from the CRDs inside the installed dask-kubernetes."""
    root = importlib.resources.files("dask_kubernetes.operator").joinpath(CRD_DIR)
    schemas = {}
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            crd = yaml.safe_load(entry.read_text())
            version = next(v for v in crd["spec"]["versions"] if v.get("storage", True))
            kind, api = crd["spec"]["names"]["kind"], f"{crd['spec']['group']}/{version['name']}"
            schemas[kind] = _top_level(to_json_schema(version["schema"]["openAPIV3Schema"]), kind, api)
    return schemas


def crd_schema(kind: str) -> dict[str, Any]:
    schemas = crd_schemas()
    if kind not in schemas:
        raise KeyError(f"no CRD for kind {kind} in dask-kubernetes; it has {sorted(schemas)}")
    return schemas[kind]


def to_json_schema(node: Any) -> Any:
    """A structural openAPIV3Schema as strict JSON Schema (see the module docstring)."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value) for key, value in node.items()
           if key not in ("nullable", "format")}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _top_level(schema: dict[str, Any], kind: str, api: str) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    schema["properties"] = {**schema.get("properties", {}), "apiVersion": {"const": api},
                            "kind": {"const": kind}, "metadata": {"$ref": OBJECT_META}}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return schema


@functools.cache
def _registry(version: str) -> Registry:
    """The Kubernetes definitions (for ObjectMeta) of ``version``, from kubernetes-validate."""
    exact = [v for v in kubernetes_validate.utils.all_versions() if v.startswith(f"{version}.")]
    folder = f"kubernetes-json-schema/v{exact[-1]}-local-strict/_definitions.json"
    contents = json.loads(importlib.resources.files("kubernetes_validate").joinpath(folder).read_text())
    return Registry().with_resource(DEFINITIONS, Resource.from_contents(contents))


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"
