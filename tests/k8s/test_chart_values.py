"""values.schema.json makes `helm install` / `helm template` reject bad values, naming the key; values.yaml is
documented field by field and agrees with the schema."""
from __future__ import annotations

import json
import re

import pytest
import yaml

BAD_VALUES = {
    "negative rollout replicas": (["training.grpo.rollout.replicas=-1"], "training.grpo.rollout.replicas"),
    "zero trainer replicas": (["training.sft.trainer.replicas=0"], "training.sft.trainer.replicas"),
    "negative serve max replicas": (["serving.workers.maxReplicas=-2"], "serving.workers.maxReplicas"),
    "serving without checkpoint": (["serving.model="], "serving.model"),
    "serving without API key secret": (["serving.apiKey.existingSecret="], "serving.apiKey.existingSecret"),
    "checkpoint dir not on S3": (["training.grpo.checkpointDir=/tmp/ckpt"], "training.grpo.checkpointDir"),
    "results not on S3": (["evaluation.resultsUri=results"], "evaluation.resultsUri"),
    "training data on the head's disk": (["training.grpo.data.uri=/data/seed"], "training.grpo.data.uri"),
    "unknown data format": (["training.sft.data.format=parquet"], "training.sft.data.format"),
    "evaluation without data": (["evaluation.data.uri="], "evaluation.data.uri"),
    "typo in a group": (["training.grpo.rollout.resourcez.cpu=1"], "resourcez"),
    "typo at top level": (["trainingg.grpo.enabled=true"], "trainingg"),
    "resources without limits": (["training.grpo.trainer.resources.limits=null"], "limits"),
    "resources without memory": (["serving.workers.resources.requests.memory=null"], "memory"),
    "wrong type": (["training.grpo.backoffLimit=lots"], "training.grpo.backoffLimit"),
    "bad pull policy": (["image.pullPolicy=Sometimes"], "image.pullPolicy"),
    "root pods": (["podSecurityContext.runAsNonRoot=false"], "podSecurityContext.runAsNonRoot"),
    "privilege escalation": (["securityContext.allowPrivilegeEscalation=true"], "securityContext.allowPrivilegeEscalation"),
    "checkpoint evaluation without model": (["evaluation.target=checkpoint"], "evaluation.model"),
    "unknown evaluation target": (["evaluation.target=vibes"], "evaluation.target"),
    "bad cron schedule": (["evaluation.scheduled.schedule=daily"], "evaluation.scheduled.schedule"),
    "S3 secret name not a name": (["s3.existingSecret=My_Secret"], "s3.existingSecret"),
    "Ray start param not a string": (["training.grpo.head.rayStartParams.num-cpus=0"], "num-cpus"),
    "bad ray auth mode": (["ray.authMode=off"], "ray.authMode"),
    "bad override": (["training.grpo.overrides={steps}"], "training.grpo.overrides"),
    # credentials by Secret only: a literal one in a job config would be rendered into a plain ConfigMap
    "literal S3 secret in the serve config": (["serving.config.s3.secret_key=x"], "serving.config sets s3.secret_key"),
    "literal API key in the evaluate config": (["evaluation.config.api_key=k"], "evaluation.config sets api_key"),
    "literal S3 key in the GRPO data config": (["training.grpo.config.data.s3.access_key=a"],
                                               "training.grpo.config sets data.s3.access_key"),
    "literal S3 session token in the serve config": (["serving.config.s3.session_token=t"],
                                                     "serving.config sets s3.session_token"),
    "serve autoscaling min above max": (["serving.autoscaling.minReplicas=3", "serving.autoscaling.maxReplicas=2"],
                                        "serving.autoscaling.minReplicas (3) is above"),
    "serve workers outside their bounds": (["serving.workers.minReplicas=3"], "serving.workers: need minReplicas"),
    "negative endpoint wait": (["evaluation.endpointWaitSeconds=-1"], "evaluation.endpointWaitSeconds"),
    # KubeRay refuses rayStartParams.labels ("use the top-level Labels field"); the chart sets the groups' labels
    **{f"Ray labels in {group}.rayStartParams": ([f"{group}.rayStartParams.labels=a"], f"{group}.rayStartParams.labels")
       for group in ("training.grpo.head", "training.grpo.rollout", "training.grpo.trainer", "training.sft.head",
                     "training.sft.trainer", "serving.head", "serving.workers")},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_rejected(helm_runner, case):
    sets, key = BAD_VALUES[case]
    out = helm_runner.template(sets=sets)
    assert out.returncode != 0, f"{case}: accepted"
    assert "values don't meet the specifications of the schema" in out.stderr or "execution error" in out.stderr, out.stderr
    assert key in out.stderr, out.stderr


def test_endpoint_evaluation_needs_an_endpoint(helm_runner):
    out = helm_runner.template(sets=["serving.enabled=false"])
    assert out.returncode != 0 and "evaluation.endpoint" in out.stderr
    ok = helm_runner.template(sets=["serving.enabled=false", "evaluation.endpoint=https://llm.example.com/v1"])
    assert ok.returncode == 0, ok.stderr


def test_good_variants_are_accepted(helm_runner):
    for sets in (["training.grpo.enabled=false", "training.sft.enabled=true"],
                 ["evaluation.scheduled.schedule=*/30 * * * *", "evaluation.scheduled.timeZone=Etc/UTC"],
                 ["training.grpo.overrides[0]=steps=10", "training.grpo.overrides[1]=resume=never"],
                 ["serving.service.type=LoadBalancer", "s3.existingSecret=seedr1-s3"],
                 ["serviceAccount.create=false", "image.pullSecrets[0]=regcred", "commonLabels.team=ml",
                  "fullnameOverride=llm", "training.grpo.runtimeEnv.env_vars.NCCL_DEBUG=INFO"]):
        out = helm_runner.template(sets=sets)
        assert out.returncode == 0, f"{sets}: {out.stderr}"


def test_overrides_reach_the_entrypoint(helm_runner):
    docs = helm_runner.docs(sets=["training.grpo.overrides[0]=steps=10", "training.grpo.overrides[1]=resume=never"])
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["spec"]["entrypoint"].endswith("--config /etc/seedr1/config/grpo.yaml 'steps=10' 'resume=never'")


def _leaves(node, path=""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    else:
        yield path


def test_schema_names_every_default_value(chart_dir):
    """values.yaml and values.schema.json agree: the defaults validate and every default key is in the schema."""
    from jsonschema import Draft7Validator

    schema = json.loads((chart_dir / "values.schema.json").read_text())
    Draft7Validator.check_schema(schema)
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    Draft7Validator(schema).validate(values)


def test_values_yaml_is_documented(chart_dir):
    """Every value in values.yaml is documented: a `#` comment right above it or above one of its parents, or the
    same key at the same depth documented in a sibling block (the `sft` block mirrors `grpo`)."""
    lines = (chart_dir / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the open parents
    documented_names: set[tuple[int, str]] = set()
    pending: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9_.-]*):", line)
        if not m:
            continue
        indent, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        own = i > 0 and lines[i - 1].strip().startswith("#")
        documented = own or any(d for _, d in stack)
        if own:
            documented_names.add((indent, name))
        rest = line[m.end():].split(" #")[0].strip()
        following = next((ln for ln in lines[i + 1:] if ln.strip() and not ln.strip().startswith("#")), "")
        leaf = bool(rest) or len(following) - len(following.lstrip()) <= indent
        if leaf and not documented:
            pending.append((indent, name))
        stack.append((indent, documented))
    undocumented = [f"{' ' * ind}{name}" for ind, name in pending if (ind, name) not in documented_names]
    assert not undocumented, undocumented


def test_optional_pieces_render_valid_objects(helm_runner, k8s_version, pod_specs):
    import kubernetes_validate

    docs = helm_runner.docs(sets=["serviceAccount.create=false", "image.pullSecrets[0]=regcred", "commonLabels.team=ml",
                                  "fullnameOverride=llm", "training.grpo.runtimeEnv.env_vars.NCCL_DEBUG=INFO",
                                  "extraEnv[0].name=HF_HOME", "extraEnv[0].value=/tmp/hf"])
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["metadata"]["name"] == "llm-grpo" and job["metadata"]["labels"]["team"] == "ml"
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == {"env_vars": {"NCCL_DEBUG": "INFO"}}
    for doc in docs:
        for where, spec in pod_specs(doc):
            assert spec["imagePullSecrets"] == [{"name": "regcred"}], where
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec},
                                         k8s_version, strict=True)


def test_every_ray_start_params_refuses_labels(chart_dir):
    """Every rayStartParams the schema knows refuses `labels` (KubeRay rejects it), not only the groups named above."""
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "rayStartParams":
                    found.append(path)
                    assert v.get("properties", {}).get("labels") is False, path
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for v in node:
                walk(v, path)

    walk(schema, "")
    assert len(found) == 7, found
