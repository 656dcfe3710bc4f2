"""Offline validation of rendered manifests: no cluster, no network.

- Core kinds (Namespace, ConfigMap, DaemonSet, Job, ...): ``kubernetes-validate``
  (bundled Kubernetes OpenAPI schemas, strict: unknown fields are errors).
- Custom resources (RayService, StressChaos, NetworkChaos, PodMonitor): JSON schemas
  vendored in ``schemas/`` from the operators' CRDs (see each file's ``$comment``),
  checked strictly as kubeconform's ``-strict`` does; pod templates inside a
  RayService are checked as core/v1 PodTemplateSpec, and its ``serveConfigV2`` with
  Ray Serve's own ``ServeDeploySchema``.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from chaosbench.errors import InputInvalid, PreflightFailed

K8S_VERSION = "1.33.0"
SCHEMAS = Path(__file__).parent / "schemas"
CRD_FILES = {
    ("ray.io/v1", "RayService"): "rayservice.json",
    ("chaos-mesh.org/v1alpha1", "StressChaos"): "stresschaos.json",
    ("chaos-mesh.org/v1alpha1", "NetworkChaos"): "networkchaos.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
}


def _strict(schema: Any) -> Any:
    """Objects with declared properties reject unknown keys (structural CRDs would prune them silently)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    return _strict(json.loads((SCHEMAS / CRD_FILES[(api_version, kind)]).read_text()))


def _where(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(root)"


def _core(obj: dict[str, Any]) -> list[str]:
    try:
        import kubernetes_validate
    except ModuleNotFoundError as exc:
        raise PreflightFailed("kubernetes-validate is not installed: pip install kubernetes-validate "
                              "(the k8s dry-run validates every manifest offline)") from exc

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_where(exc)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no Kubernetes {K8S_VERSION} schema for {obj.get('apiVersion')}/{obj.get('kind')}"]
    return []


def _pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cluster = obj.get("spec", {}).get("rayClusterConfig", {})
    out = [("spec.rayClusterConfig.headGroupSpec.template", cluster.get("headGroupSpec", {}).get("template", {}))]
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        out.append((f"spec.rayClusterConfig.workerGroupSpecs.{i}.template", group.get("template", {})))
    return out


def _serve_config(text: str) -> list[str]:
    import warnings

    import yaml
    from pydantic import ValidationError

    with warnings.catch_warnings():  # ray's models emit pydantic deprecation warnings on import
        warnings.simplefilter("ignore")
        from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        return [f"spec.serveConfigV2: {e['loc']}: {e['msg']}" for e in exc.errors()]
    except yaml.YAMLError as exc:
        return [f"spec.serveConfigV2: not YAML ({exc})"]
    return []


NETWORK_ACTION_BLOCK = {"delay": "delay", "loss": "loss", "duplicate": "duplicate", "corrupt": "corrupt",
                        "bandwidth": "bandwidth"}


def _chaos_rules(obj: dict[str, Any]) -> list[str]:
    """Checks Chaos Mesh's admission webhook makes beyond the CRD schema."""
    spec, problems = obj.get("spec") or {}, []
    if obj["kind"] == "NetworkChaos":
        action = spec.get("action", "delay")
        block = NETWORK_ACTION_BLOCK.get(action)
        if block and block not in spec:
            problems.append(f"spec.{block}: required for action {action!r}")
        if action == "netem" and not any(k in spec for k in ("delay", "loss", "duplicate", "corrupt")):
            problems.append("spec: action 'netem' needs at least one of delay, loss, duplicate, corrupt")
        if spec.get("direction") in ("from", "both") and not spec.get("target"):
            problems.append(f"spec.target: required for direction {spec['direction']!r}")
    if obj["kind"] == "StressChaos" and not (spec.get("stressors") or spec.get("stressngStressors")):
        problems.append("spec.stressors: give at least one stressor")
    return problems


def _custom(obj: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(crd_schema(obj["apiVersion"], obj["kind"]))
    problems = [f"{_where(e)}: {e.message}" for e in sorted(validator.iter_errors(obj), key=str)]
    if obj["kind"] == "RayService":
        for where, template in _pod_templates(obj):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                       "template": copy.deepcopy(template)}
            problems += [f"{where}.{p.removeprefix('template.')}" for p in _core(wrapped)]
        problems += _serve_config(obj["spec"].get("serveConfigV2", ""))
    if obj["apiVersion"].startswith("chaos-mesh.org/"):
        problems += _chaos_rules(obj)
    return problems


def validate_object(obj: Any) -> list[str]:
    """Problems with one Kubernetes object, as ``path: message`` lines (empty: valid)."""
    if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
        return ["(root): not a Kubernetes object (apiVersion and kind required)"]
    if (obj["apiVersion"], obj["kind"]) in CRD_FILES:
        return _custom(obj)
    return _core(obj)


def check_rendered(rendered) -> int:
    """Validate every object of a Rendered; raise InputInvalid listing all problems. Returns the object count."""
    problems, count = [], 0
    for rel, obj in rendered.documents():
        count += 1
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        problems += [f"k8s/{rel}: {name}: {p}" for p in validate_object(obj)]
    if problems:
        raise InputInvalid("rendered manifests are invalid:\n" + "\n".join(problems))
    return count
