"""The cluster manifests, checked without an engine: Kubernetes is not available here, so core
Kubernetes objects go through the offline OpenAPI schemas of ``kubernetes-validate``, custom
resources (SeldonDeployment) are checked field by field and every container's arguments are parsed
by the real option parsers. The image: test_docker_image.py; Argo and Kubeflow: test_workflow_manifests.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions

from tests.manifest_helpers import documents, find, parse_processor

KUBERNETES_VERSION = "1.29.0"


def test_every_manifest_has_the_fields_every_engine_requires() -> None:
    """apiVersion, kind and a name (or generateName) on every object; the files cover the Job,
    the merge Job, the Argo Workflow, the daemon Deployment + Service and a SeldonDeployment."""
    seen = set()
    for file, doc in documents():
        assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), file
        meta = doc.get("metadata") or {}
        assert meta.get("name") or meta.get("generateName"), f"{file}: {doc['kind']} has no name"
        seen.add((file, doc["kind"]))
    for expected in [("job-indexed.yaml", "Job"), ("job-merge.yaml", "Job"), ("argo-workflow.yaml", "Workflow"),
                     ("daemon-deployment.yaml", "Deployment"), ("daemon-deployment.yaml", "Service"),
                     ("daemon-deployment.yaml", "PersistentVolumeClaim"),
                     ("seldondeployment.yaml", "SeldonDeployment")]:
        assert expected in seen, expected


CUSTOM_KINDS = {"Workflow", "SeldonDeployment"}


def test_core_objects_pass_the_kubernetes_openapi_schema() -> None:
    """Job, Deployment, Service, PVC and RBAC objects validate strictly (unknown fields rejected)
    against the Kubernetes 1.29 schemas that kubernetes-validate ships (offline)."""
    checked = 0
    for file, doc in documents():
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{file}: {doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")
        checked += 1
    assert checked >= 7


def test_the_validator_rejects_a_broken_job() -> None:
    """The schema check has teeth: a string where an integer belongs, or an unknown field, fails."""
    (job,) = find("Job", "job-indexed.yaml")
    broken = json.loads(json.dumps(job))
    broken["spec"]["completions"] = "4"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(job))
    broken["spec"]["template"]["spec"]["containers"][0]["argz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def test_indexed_job_runs_one_shard_per_completion_index() -> None:
    """completionMode Indexed with completions == parallelism == --shard-count; no --shard-index
    (it comes from JOB_COMPLETION_INDEX); the args parse with the real option table for every index."""
    (job,) = [d for d in find("Job", "job-indexed.yaml")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    k = spec["completions"]
    assert isinstance(k, int) and k > 1 and spec["parallelism"] == k
    pod = pod_spec(job)
    assert pod["restartPolicy"] == "OnFailure"  # a killed container continues from the staging file in its pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", container["image"]) and not container["image"].endswith(":latest")
    args = container["args"]
    assert not any(a.startswith("--shard-index") for a in args)
    for index in range(k):
        config = parse_processor(args, {"JOB_COMPLETION_INDEX": str(index)}).config()
        assert (config.shard_index, config.shard_count) == (index, k)
    with pytest.raises(usage.UsageError):
        parse_processor(args, {"JOB_COMPLETION_INDEX": str(k)})
    # the object store, like the Argo and Kubeflow examples: no shared volume; a retried shard resumes
    assert parse_processor(args).config().input_data_path.startswith("s3://")
    assert not find("PersistentVolumeClaim", "job-indexed.yaml") and "--resume" in args
    (sdep,) = find("SeldonDeployment", "seldondeployment.yaml")
    config = parse_processor(args).config()
    predictor = sdep["spec"]["predictors"][0]["name"]
    service = f"{sdep['metadata']['name']}-{predictor}.{sdep['metadata']['namespace']}"
    assert config.host == f"{service}.svc.cluster.local:8000"
    assert config.gateway_type == "seldon" and config.deployment_name == sdep["metadata"]["name"]


def test_merge_job_reads_the_shard_files_the_indexed_job_writes() -> None:
    """The merge globs exactly the default shard output names of K shards, and gets --input."""
    (job,) = find("Job", "job-indexed.yaml")
    k = job["spec"]["completions"]
    (merge,) = find("Job", "job-merge.yaml")
    container = pod_spec(merge)["containers"][0]
    command = " ".join(container["command"] + container["args"])
    config = parse_processor(pod_spec(job)["containers"][0]["args"]).config()
    shard_path = config.output_data_path
    assert shard_path.endswith(f".shard-0-of-{k}.txt")
    assert "seldon-batch merge -o " in command
    script = container["args"][0].replace("exec seldon-batch merge", "echo")  # the paths the shell passes
    rendered = subprocess.run(["sh", "-c", script, *container["args"][1:]], capture_output=True, text=True,
                              timeout=30).stdout.split()
    assert rendered[2:4] == ["--input", config.input_data_path]
    assert rendered[4:] == [shard_path.replace(".shard-0-", f".shard-{i}-") for i in range(k)]


def test_seldon_deployment_example() -> None:
    (sdep,) = find("SeldonDeployment")
    assert sdep["apiVersion"] == "machinelearning.seldon.io/v1"
    for predictor in sdep["spec"]["predictors"]:
        assert isinstance(predictor["replicas"], int) and predictor["replicas"] >= 1
        assert predictor["graph"]["name"] and predictor["graph"]["implementation"]


# -- the daemon -------------------------------------------------------------------------------

def test_daemon_deployment_selectors_probes_and_service_line_up() -> None:
    """Selector matches the pod labels; probes hit /health on the named dashboard port; the
    Service selects the same pods and targets that port; the token comes from a Secret."""
    (deployment,) = find("Deployment", "daemon-deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    (container,) = pod_spec(deployment)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] in ports
    (service,) = find("Service", "daemon-deployment.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ports and service["spec"]["ports"][0]["port"] == 8080
    env = {e["name"]: e for e in container["env"]}
    token = env["SELDON_BATCH_DASHBOARD_TOKEN"]
    assert "value" not in token and token["valueFrom"]["secretKeyRef"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] in mounts)
    claims = {p["metadata"]["name"] for p in find("PersistentVolumeClaim", "daemon-deployment.yaml")}
    assert volume["persistentVolumeClaim"]["claimName"] in claims
    assert any(a == f"--watch-dir={mounts[volume['name']]}" for a in container["args"])


def test_daemon_command_parses_with_the_real_twistd_and_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`twistd ARGS` of the Deployment parse with twistd's own parser and the seldon-batch plugin's
    options: a non-loopback dashboard accepted because the token comes from the environment."""
    (deployment,) = find("Deployment", "daemon-deployment.yaml")
    (container,) = pod_spec(deployment)["containers"]
    assert container["command"] == ["twistd"]
    watch = tmp_path / "watch"
    watch.mkdir()
    args = [a.replace("=/watch", f"={watch}") for a in container["args"]]
    monkeypatch.setenv("SELDON_BATCH_DASHBOARD_TOKEN", "a-test-token-from-the-secret")
    options = ServerOptions()
    options.parseOptions(args)
    assert options["nodaemon"] and options["pidfile"] == ""
    assert options.subCommand == "seldon-batch"
    sub = options.subOptions
    assert sub["watch-dir"] == str(watch) and sub["dashboard"] == "tcp:8080"
    assert sub["dashboard-token"] == "a-test-token-from-the-secret"
    monkeypatch.delenv("SELDON_BATCH_DASHBOARD_TOKEN")
    with pytest.raises(SystemExit) as refused:  # twistd's own parser: one line, exit 2
        ServerOptions().parseOptions(args)
    assert refused.value.code == 2
    assert "token" in capsys.readouterr().err


def test_health_route_exists_and_needs_no_token() -> None:
    """The path the probes use is served by the dashboard without the token."""
    from twisted.internet.task import Clock
    from twisted.web.test.requesthelper import DummyRequest

    from seldon_batch_tx.dashboard.registry import BatchRegistry
    from seldon_batch_tx.dashboard.site import DashboardRoot

    root = DashboardRoot(BatchRegistry(Clock()), token="secret")
    request: Any = DummyRequest([b"health"])
    child: Any = root.getChildWithDefault(b"health", request)
    body = child.render_GET(request)
    assert json.loads(body)["status"] == "ok"
