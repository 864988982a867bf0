"""What matters in what the chart renders: separate rollout and trainer groups with enough accelerators for the job's
config, secrets only by reference, resources and non-root on every container, app.kubernetes.io labels, the
endpoint Service, dashboards for the Grafana sidecar, NOTES.txt."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

VALUE_SET_NAMES = ["default", "values-cpu-toy", "values-grpo-8gpu", "values-grpo-8gpu-served", "checkpoint-eval"]
SECRETISH = re.compile(r"(SECRET|PASSWORD|TOKEN|API_KEY|ACCESS_KEY)", re.I)


def _qty(v) -> float:
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes, counts as is)."""
    s = str(v)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30,
             "Ti": 2 ** 40}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", s)
    assert m, s
    return float(m.group(1)) * units.get(m.group(2), 1)


def _config(docs, key):
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config"))
    return yaml.safe_load(cm["data"][key])


def _groups(job):
    return {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}


def _group_total(group, resource) -> float:
    (container,) = group["template"]["spec"]["containers"]
    return _qty(container["resources"]["limits"].get(resource, 0)) * group["replicas"]


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_grpo_has_distinct_rollout_and_trainer_groups(renders, name):
    job = next(d for d in renders[name] if d["kind"] == "RayJob"
               and d["metadata"]["labels"]["app.kubernetes.io/component"] == "training-grpo")
    groups = _groups(job)
    assert set(groups) == {"rollout", "trainer"}
    rollout, trainer = groups["rollout"], groups["trainer"]
    # Distinct on every level: Ray node labels, pod labels, and fixed sizes (no autoscaling mid-run).
    assert rollout["labels"] == {"seedr1.io/group": "rollout"} and trainer["labels"] == {"seedr1.io/group": "trainer"}
    assert rollout["template"]["metadata"]["labels"]["seedr1.io/ray-group"] == "rollout"
    assert trainer["template"]["metadata"]["labels"]["seedr1.io/ray-group"] == "trainer"
    for g in (rollout, trainer):
        assert g["replicas"] == g["minReplicas"] == g["maxReplicas"] >= 1
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    assert spec["activeDeadlineSeconds"] > 0 and spec["submissionMode"] == "K8sJobMode"


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_groups_hold_what_the_job_config_reserves(renders, name):
    """Each group has the CPUs/GPUs its part of the job reserves in Ray (actors x per-actor, workers x per-worker)."""
    import seedr1.config as config

    for job in (d for d in renders[name] if d["kind"] == "RayJob"):
        kind = job["metadata"]["labels"]["app.kubernetes.io/component"].removeprefix("training-")
        cls = config.GRPOConfig if kind == "grpo" else config.SFTConfig
        cfg = config.from_dict(cls, _config(renders[name], f"{kind}.yaml"))
        groups = _groups(job)
        need = {"trainer": (cfg.trainer.num_workers * cfg.trainer.cpus_per_worker,
                            cfg.trainer.num_workers * cfg.trainer.gpus_per_worker)}
        if kind == "grpo":
            need["rollout"] = (cfg.rollout.num_actors * cfg.rollout.cpus_per_actor,
                               cfg.rollout.num_actors * cfg.rollout.gpus_per_actor)
        assert set(groups) == set(need)
        for gname, (cpus, gpus) in need.items():
            assert _group_total(groups[gname], "cpu") >= cpus, (name, kind, gname)
            assert _group_total(groups[gname], "nvidia.com/gpu") >= gpus, (name, kind, gname)


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_serve_replicas_and_evaluation_actors_fit_their_pods(renders, served_config, name):
    import seedr1.config as config

    docs = renders[name]
    for doc in docs:
        if doc["kind"] == "RayService":
            serve = served_config(docs)
            (workers,) = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
            limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert serve.cpus_per_replica <= _qty(limits["cpu"])
            assert serve.gpus_per_replica <= _qty(limits.get("nvidia.com/gpu", 0))
            assert serve.max_replicas <= workers["maxReplicas"] * max(1, int(_qty(limits["cpu"]) // serve.cpus_per_replica))
        if doc["kind"] == "CronJob":
            ev = config.from_dict(config.EvaluateConfig, _config(docs, "evaluate.yaml"))
            if not ev.endpoint:  # vLLM actors inside the evaluation pod
                limits = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
                assert ev.num_actors * ev.cpus_per_actor <= _qty(limits["cpu"])
                assert ev.num_actors * ev.gpus_per_actor <= _qty(limits.get("nvidia.com/gpu", 0))


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_training_heads_take_no_ray_work_and_workers_hold_it_all(renders, name):
    """The head runs the driver only: without num-cpus "0" KubeRay gives Ray the head's CPU limit and the rollout and
    trainer placement groups (PACK) or data tasks can land on it. Then the workers hold everything the run asks of
    Ray at once: rollout actors, trainer workers and the Ray Data decode tasks."""
    import seedr1.config as config

    for job in (d for d in renders[name] if d["kind"] == "RayJob"):
        kind = job["metadata"]["labels"]["app.kubernetes.io/component"].removeprefix("training-")
        assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", (name, kind)
        cls = config.GRPOConfig if kind == "grpo" else config.SFTConfig
        cfg = config.from_dict(cls, _config(renders[name], f"{kind}.yaml"))
        need = cfg.trainer.num_workers * cfg.trainer.cpus_per_worker + cfg.data.decode_concurrency
        if kind == "grpo":
            need += cfg.rollout.num_actors * cfg.rollout.cpus_per_actor
        have = sum(_group_total(g, "cpu") for g in _groups(job).values())
        assert have >= need, (name, kind, have, need)


def test_ttl_only_on_clusters_kuberay_shuts_down(helm_runner, all_docs):
    """KubeRay refuses a RayJob with shutdownAfterJobFinishes: false and a ttlSecondsAfterFinished."""
    for _, doc in all_docs:
        if doc["kind"] == "RayJob" and "ttlSecondsAfterFinished" in doc["spec"]:
            assert doc["spec"]["shutdownAfterJobFinishes"] is True
    docs = helm_runner.docs(sets=["training.grpo.shutdownAfterJobFinishes=false", "training.sft.enabled=true"])
    jobs = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "RayJob"}
    assert jobs["t-seedr1-grpo"]["shutdownAfterJobFinishes"] is False
    assert "ttlSecondsAfterFinished" not in jobs["t-seedr1-grpo"]
    assert jobs["t-seedr1-sft"]["ttlSecondsAfterFinished"] == 300  # the other job keeps its own


def test_paper_example_places_groups_on_their_own_gpu_pools(renders):
    job = next(d for d in renders["values-grpo-8gpu"] if d["kind"] == "RayJob")
    groups = _groups(job)
    assert _group_total(groups["rollout"], "nvidia.com/gpu") == 4 and _group_total(groups["trainer"], "nvidia.com/gpu") == 4
    pools = {n: g["template"]["spec"]["nodeSelector"]["node.kubernetes.io/pool"] for n, g in groups.items()}
    assert pools == {"rollout": "gpu-rollout", "trainer": "gpu-train"}
    for g in groups.values():
        assert any(t["key"] == "nvidia.com/gpu" for t in g["template"]["spec"]["tolerations"])
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver's node takes no actors
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_every_container_has_resources_and_runs_as_non_root(renders, pod_specs, name):
    count = 0
    for doc in renders[name]:
        for where, spec in pod_specs(doc):
            pod_sc = spec.get("securityContext", {})
            assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) > 0, where
            assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            if doc["kind"] == "RayService" and where.endswith("/head"):
                # KubeRay's autoscaler sidecar needs the API: KubeRay gives the head its own ServiceAccount and RBAC
                assert "serviceAccountName" not in spec and "automountServiceAccountToken" not in spec, where
            else:
                assert spec.get("automountServiceAccountToken") is False, where
                assert spec["serviceAccountName"] == "t-seedr1", where
            for c in spec.get("initContainers", []) + spec["containers"]:
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(res.get(part, {})), f"{where}/{c['name']}: {part}"
                for key, req in res["requests"].items():
                    assert _qty(req) <= _qty(res["limits"][key]), f"{where}/{c['name']}: {key}"
                sc = c.get("securityContext", {})
                assert sc.get("runAsNonRoot") is True and sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("privileged") is False and sc.get("capabilities", {}).get("drop") == ["ALL"], where
                count += 1
        if doc["kind"] == "RayService":  # KubeRay's autoscaler sidecar, configured through autoscalerOptions
            opts = doc["spec"]["rayClusterConfig"]["autoscalerOptions"]
            assert {"cpu", "memory"} <= set(opts["resources"]["requests"]) and opts["securityContext"]["runAsNonRoot"]
    assert count >= 3


def _walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    yield path, node


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_secrets_are_referenced_not_inlined(renders, pod_specs, name):
    docs = renders[name]
    assert not [d for d in docs if d["kind"] == "Secret"]
    # Every secret-looking environment variable comes from a secretKeyRef.
    for doc in docs:
        for where, spec in pod_specs(doc):
            for c in spec["containers"]:
                for env in c.get("env", []):
                    if SECRETISH.search(env["name"]):
                        assert "value" not in env and "secretKeyRef" in env["valueFrom"], f"{where}: {env['name']}"
    # No credential in any config file of the ConfigMap.
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config"))
    for key, text in cm["data"].items():
        if key.endswith(".yaml"):
            for path, value in _walk(yaml.safe_load(text)):
                if path.rsplit(".", 1)[-1] in ("api_key", "access_key", "secret_key", "api_keys"):
                    assert not value, f"{key}{path}"


def test_credentials_come_from_the_named_secrets(renders, pod_specs):
    docs = renders["values-cpu-toy"]
    refs = set()
    for doc in docs:
        for where, spec in pod_specs(doc):
            if where.endswith("/submitter"):
                continue
            env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
            assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "seedr1-s3", "key": "AWS_ACCESS_KEY_ID"}
            assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "seedr1-s3"
            assert env["AWS_ENDPOINT_URL"]["value"].startswith("http://minio")
            for vol in spec.get("volumes", []):
                if "secret" in vol:
                    refs.add(vol["secret"]["secretName"])
            if doc["kind"] in ("Job", "CronJob"):
                assert env["SEEDR1_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "seedr1-api-keys", "key": "keys"}
    assert refs == {"seedr1-api-keys"}  # the serving pods mount the API keys file


def test_serving_mounts_api_keys_and_exposes_a_service(renders, release, served_config):
    name, ns = release
    docs = renders["values-grpo-8gpu-served"]
    svc_doc = next(d for d in docs if d["kind"] == "RayService")
    cluster = svc_doc["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    (workers,) = cluster["workerGroupSpecs"]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 4)
    for tmpl in (cluster["headGroupSpec"]["template"], workers["template"]):
        mounts = {m["mountPath"]: m for m in tmpl["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["/etc/seedr1/api-keys"]["readOnly"] is True
        assert any(p["containerPort"] == 8000 and p["name"] == "serve" for p in tmpl["spec"]["containers"][0]["ports"])
        assert tmpl["metadata"]["labels"]["app.kubernetes.io/component"] == "serving"
    serve_cfg = served_config(docs)
    assert serve_cfg.model == "s3://your-bucket/seedr1/runs/grpo-qwen2-vl-7b/step_00000750/hf"
    assert (serve_cfg.min_replicas, serve_cfg.max_replicas) == (1, 4)
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["selector"]["ray.io/serve"] == "true"
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "serving"
    assert service["spec"]["ports"][0]["targetPort"] == "serve"
    # The scheduled evaluation targets that Service.
    assert _config(docs, "evaluate.yaml")["endpoint"] == f"http://{service['metadata']['name']}.{ns}.svc:8000/v1"


def test_scheduled_and_on_demand_evaluation(renders):
    docs = renders["values-cpu-toy"]
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert cron["spec"]["schedule"] == "@hourly" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["metadata"]["name"].endswith("-evaluate-r1")
    for spec in (cron["spec"]["jobTemplate"]["spec"]["template"]["spec"], job["spec"]["template"]["spec"]):
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["RESULTS_URI"] == "s3://seedr1-toy/eval"
    ev = _config(docs, "evaluate.yaml")
    assert ev["data"]["root"] == "s3://seedr1-toy/data-mini" and "files" not in ev  # L1/L2/L3: the job's default
    import seedr1.config as config

    assert [f.rsplit("_", 1)[-1] for f in config.EvaluateConfig().files] == ["L1.jsonl", "L2.jsonl", "L3.jsonl"]
    ck = _config(renders["checkpoint-eval"], "evaluate.yaml")
    assert ck["model"].startswith("s3://") and "endpoint" not in ck


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_recommended_labels_everywhere(renders, release, name):
    rel, _ = release
    for doc in renders[name]:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "seedr1", doc["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == rel
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "seedr1"
        assert labels["app.kubernetes.io/version"]
        if doc["kind"] != "ServiceAccount":
            assert labels["app.kubernetes.io/component"]


def test_dashboards_optional_and_labelled_for_the_sidecar(renders, chart_dir):
    assert not [d for d in renders["default"] if d["metadata"]["labels"].get("grafana_dashboard")]
    files = sorted(p.name for p in (chart_dir / "dashboards").glob("*.json"))
    maps = [d for d in renders["values-grpo-8gpu"] if d["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboards"]
    assert len(maps) == len(files) >= 1
    assert sorted(k for d in maps for k in d["data"]) == files
    for d in maps:
        assert d["metadata"]["labels"]["grafana_dashboard"] == "1"
        for text in d["data"].values():
            dash = json.loads(text)
            assert dash["title"] and dash["panels"]


def _notes(helm_runner, chart_dir, tmp_path, files=(), sets=()) -> str:
    """NOTES.txt (which `helm template` does not print) rendered through a copy of the chart."""
    chart = tmp_path / "seedr1"
    if not chart.exists():
        shutil.copytree(chart_dir, chart)
        shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "NOTES.txt")
        (chart / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n"
            "    {{- tpl (.Files.Get \"files/NOTES.txt\") . | nindent 4 }}\n")
    docs = helm_runner.docs(files, sets, chart=chart, extra=["--show-only", "templates/zz-notes.yaml"])
    return docs[0]["data"]["notes"]


def test_notes_tell_how_to_reach_the_endpoint_and_follow_jobs(helm_runner, chart_dir, tmp_path, value_sets):
    files, _ = value_sets["values-cpu-toy"]
    notes = _notes(helm_runner, chart_dir, tmp_path, files)
    for needle in ("get rayjob t-seedr1-grpo", "get rayjob t-seedr1-sft", "logs -f job/t-seedr1-grpo",
                   "get rayservice t-seedr1", "port-forward svc/t-seedr1-serve 8000:8000", "/v1/chat/completions",
                   "Authorization: Bearer", "cronjob/t-seedr1-evaluate", "s3://seedr1-toy/eval", "grafana_dashboard"):
        assert needle in notes, needle
    # a finished RayJob is never re-run by an upgrade: how to start a new run
    for kind in ("grpo", "sft"):
        assert f"kubectl -n seedr1 delete rayjob t-seedr1-{kind}" in notes, kind


def test_new_training_runs_are_documented(chart_dir):
    """helm upgrade only patches the fixed-name RayJob, and KubeRay does not re-run a finished one."""
    readme = (chart_dir.parents[1] / "README.md").read_text()
    assert "kubectl delete rayjob <release>-seedr1-grpo && helm upgrade" in readme
    assert "never re-runs a finished RayJob" in readme


def test_notes_run_the_cronjob_now_under_a_new_name(helm_runner, chart_dir, tmp_path):
    """`kubectl create job --from=cronjob/...` twice with one name fails (AlreadyExists): the name has a timestamp,
    and stays a valid Job name (63 characters) for the longest release name."""
    notes = _notes(helm_runner, chart_dir, tmp_path, sets=["fullnameOverride=" + "f" * 40])
    (line,) = [ln for ln in notes.splitlines() if "create job --from=cronjob/" in ln]
    m = re.search(r"--from=cronjob/\S+ (\S+-\$\(date \+%s\))$", line)
    assert m, line
    name = m.group(1)
    assert len(name.replace("$(date +%s)", "1" * 10)) <= 63, name


def test_route_prefix_reaches_the_evaluation_and_the_notes(helm_runner, chart_dir, tmp_path, serve_app):
    sets = ["serving.config.route_prefix=/llm", "evaluation.onDemand.enabled=true"]
    docs = helm_runner.docs(sets=sets)
    assert serve_app(docs)["route_prefix"] == "/llm"
    assert _config(docs, "evaluate.yaml")["endpoint"] == "http://t-seedr1-serve.seedr1.svc:8000/llm/v1"
    for doc in docs:
        if doc["kind"] == "Job":
            (init,) = doc["spec"]["template"]["spec"]["initContainers"]
            assert "http://t-seedr1-serve.seedr1.svc:8000/llm/v1" in init["command"]
    notes = _notes(helm_runner, chart_dir, tmp_path, sets=sets)
    assert "curl -s localhost:8000/llm/v1/models" in notes and "localhost:8000/llm/v1/chat/completions" in notes
    assert "In the cluster: http://t-seedr1-serve.seedr1.svc:8000/llm/v1" in notes
    # the default prefix "/" gives the plain /v1
    assert _config(helm_runner.docs(), "evaluate.yaml")["endpoint"] == "http://t-seedr1-serve.seedr1.svc:8000/v1"


def _evaluation_pods(docs):
    for doc in docs:
        if doc["kind"] == "Job":
            yield doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_endpoint_evaluation_waits_for_the_endpoint(renders, helm_runner):
    """At install the RayService's Service has no endpoints until the model is loaded: an endpoint evaluation first
    waits for it (bounded by evaluation.endpointWaitSeconds); a checkpoint evaluation does not."""
    pods = list(_evaluation_pods(renders["values-cpu-toy"]))
    assert len(pods) == 2  # the install-time Job and the CronJob
    for spec in pods:
        (init,) = spec["initContainers"]
        assert init["command"] == ["python", "/etc/seedr1/config/wait_for_endpoint.py",
                                   "http://t-seedr1-serve.seedr1.svc:8000/v1", "1800"]
        assert init["image"] == spec["containers"][0]["image"]
        assert {"name": "config", "mountPath": "/etc/seedr1/config", "readOnly": True} in init["volumeMounts"]
    assert "wait_for_endpoint.py" in next(d for d in renders["values-cpu-toy"] if d["kind"] == "ConfigMap")["data"]
    for spec in _evaluation_pods(renders["checkpoint-eval"]):
        assert "initContainers" not in spec
    docs = helm_runner.docs(sets=["evaluation.endpointWaitSeconds=0"])
    assert all("initContainers" not in spec for spec in _evaluation_pods(docs))
    docs = helm_runner.docs(sets=["evaluation.endpointWaitSeconds=60", "serving.enabled=false",
                                  "evaluation.endpoint=https://llm.example.com/v1"])
    (spec,) = _evaluation_pods(docs)
    assert spec["initContainers"][0]["command"][2:] == ["https://llm.example.com/v1", "60"]


def test_wait_for_endpoint_script(renders, tmp_path):
    """The init container's script: up on any answer below 500 (401 included), else it retries until its deadline."""
    import http.server
    import socket
    import subprocess
    import sys
    import threading

    script = tmp_path / "wait_for_endpoint.py"
    script.write_text(next(d for d in renders["values-cpu-toy"] if d["kind"] == "ConfigMap")["data"]["wait_for_endpoint.py"])
    seen = []

    def serve(status):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append(self.path)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    def wait(url, seconds="5"):
        return subprocess.run([sys.executable, "-I", str(script), url, seconds, "0.1"], capture_output=True, text=True,
                              timeout=60)

    for status, rc in ((200, 0), (401, 0), (404, 0), (503, 1), (500, 1)):
        server = serve(status)
        out = wait(f"http://127.0.0.1:{server.server_port}/api/v1/", "0.5")
        server.shutdown()
        assert out.returncode == rc, (status, out.stdout, out.stderr)
    assert set(seen) == {"/api/v1/models"}
    with socket.socket() as s:  # a port nobody listens on: connection refused until the deadline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = wait(f"http://127.0.0.1:{port}/v1", "0.5")
    assert out.returncode == 1 and "not up after" in out.stderr, out.stderr
