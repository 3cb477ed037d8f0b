"""The image and the cluster manifests, checked without an engine: Docker and Kubernetes are not
available here, so the Dockerfile's instructions are parsed, the build context is built into a
wheel, core Kubernetes objects go through the offline OpenAPI schemas of ``kubernetes-validate``,
custom resources (Argo Workflow, SeldonDeployment) are checked field by field, every container's
arguments are parsed by the real option parsers, and the Kubeflow pipeline is compiled by the real
KFP v2 SDK."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions

from seldon_batch_tx.options import ProcessorOptions

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
K8S = ROOT / "docker" / "k8s"
KUBERNETES_VERSION = "1.29.0"
KFP_PYTHON = ROOT / ".venvs" / "kfp" / "bin" / "python"
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|CREDENTIAL", re.I)


# -- the Dockerfile -------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "a continuation line runs off the end"
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        assert result, f"{keyword} before the first FROM"
        result[-1].append((keyword, args))
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[list[tuple[str, str]]]:
    return stages(DOCKERFILE.read_text())


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for k, args in stage if k == keyword]


def test_base_images_are_slim_python_311_pinned_by_tag(dockerfile: list[list[tuple[str, str]]]) -> None:
    """Every stage starts from python:3.11.<patch>-slim..., never an unpinned or latest tag."""
    assert len(dockerfile) >= 1
    for stage in dockerfile:
        image = args_of(stage, "FROM")[0].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image
        assert "latest" not in image


def test_runtime_stage_is_non_root_with_the_processor_as_entrypoint(dockerfile: list[list[tuple[str, str]]]) -> None:
    """The final image runs as a numeric non-root user and starts seldon-batch-processor; twistd
    and seldon-batch come from the same venv on PATH."""
    runtime = dockerfile[-1]
    users = args_of(runtime, "USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit() and int(user) >= 1000, user
    assert json.loads(args_of(runtime, "ENTRYPOINT")[-1]) == ["seldon-batch-processor"]
    env = " ".join(args_of(runtime, "ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert any(a.startswith("--from=") and "/opt/venv" in a for a in args_of(runtime, "COPY"))
    assert [k for k, _ in runtime].index("USER") > max(i for i, (k, _) in enumerate(runtime) if k in ("RUN", "COPY"))


def test_package_is_installed_from_the_repo_and_no_toolchain_ships(dockerfile: list[list[tuple[str, str]]]) -> None:
    """The build stage pip-installs the checked-out package; the runtime stage installs nothing
    (no apt-get, no compilers, no pip), it only copies the finished venv."""
    build = " ".join(args_of(dockerfile[0], "RUN"))
    assert re.search(r"pip install (--[\w-]+ )*\"\.\[s3\]\"( |$)", build), build  # with object storage
    assert "twisted.plugin" in build, "the twistd plugin cache is built while site-packages is writable"
    runtime = " ".join(args_of(dockerfile[-1], "RUN"))
    for banned in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "curl", "wget"):
        assert banned not in runtime, banned


def test_no_secrets_in_the_image(dockerfile: list[list[tuple[str, str]]]) -> None:
    """No ENV/ARG carries a token or password, and credentials never enter the build context."""
    for stage in dockerfile:
        for keyword, args in stage:
            if keyword in ("ENV", "ARG"):
                names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
                for name in names:
                    assert not SECRET_WORDS.search(name), f"{keyword} {name}"
            if keyword in ("COPY", "ADD"):
                assert not re.search(r"\.env\b|\.pem\b|\.key\b|id_rsa|\.netrc|\.aws|\.kube", args), args
    text = DOCKERFILE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN", text)
    ignored = ignore_patterns()
    for needed in (".git", ".venv", ".venvs", "tests", ".env", "**/*.pem", "**/*.key"):
        assert needed in ignored, needed


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our patterns: a path is out when it or a parent matches."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


def build_context(target: Path) -> list[str]:
    """Copy what `docker build .` would send (the repo minus .dockerignore) into ``target``."""
    patterns = ignore_patterns()
    sent = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not ignored(rel_dir + d, patterns)]
        for name in filenames:
            rel = rel_dir + name
            if ignored(rel, patterns):
                continue
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target / rel)
            sent.append(rel)
    return sent


def test_build_context_builds_the_package_with_both_commands_and_the_twistd_plugin(tmp_path: Path) -> None:
    """`COPY . /src` + `pip install .` work from the context .dockerignore leaves: the wheel holds
    the package, the twistd plugin and both console scripts, and nothing of tests or venvs."""
    context = tmp_path / "context"
    sent = build_context(context)
    assert "setup.py" in sent and "seldon_batch_tx/cli.py" in sent
    assert not [p for p in sent if p.startswith((".venv", ".git/", "tests/", "bench/"))]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(context)], check=True, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("seldon_batch_tx-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "seldon_batch_tx/outputs/merge.py" in names and "seldon_batch_tx/cli.py" in names
    assert any(n.startswith("twisted/plugins/") and n.endswith(".py") for n in names)
    assert "seldon-batch-processor = seldon_batch_tx.cli:main" in entry_points
    assert "seldon-batch = seldon_batch_tx.tools:main" in entry_points
    assert re.search(r"^Requires-Dist: twisted", metadata, re.M | re.I), "twistd comes with Twisted"


# -- the manifests --------------------------------------------------------------------------

def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path.name, doc


def find(kind: str, file: str | None = None) -> list[dict[str, Any]]:
    return [d for f, d in documents() if d["kind"] == kind and (file is None or f == file)]


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


class ClusterOptions(ProcessorOptions):
    """The processor's parser, minus the check that the cluster's input file exists here."""

    needs_input = False


def parse_processor(args: list[str], environ: dict[str, str] | None = None) -> ClusterOptions:
    options = ClusterOptions(environ=environ or {})
    options.parseOptions(args)
    return options


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


# -- Argo --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    (wf,) = find("Workflow", "argo-workflow.yaml")
    return wf


def substitute(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        assert key in values, f"unknown Argo variable {{{{{key}}}}}"
        return values[key]
    return re.sub(r"\{\{([^}]+)\}\}", one, text)


def test_argo_workflow_structure(workflow: dict[str, Any]) -> None:
    """entrypoint and onExit name templates; every step names a defined template; every
    {{workflow.parameters.X}} / {{inputs.parameters.X}} is declared; volumes are defined."""
    assert workflow["apiVersion"] == "argoproj.io/v1alpha1"
    spec = workflow["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    assert len(templates) == len(spec["templates"]), "template names are unique"
    assert spec["entrypoint"] in templates and spec["onExit"] in templates
    params = {p["name"] for p in spec["arguments"]["parameters"]}
    claims = {v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])}
    for name, template in templates.items():
        volumes = claims | {v["name"] for v in template.get("volumes", [])}
        kinds = [k for k in ("steps", "dag", "container", "resource", "script") if k in template]
        assert len(kinds) == 1, f"{name}: {kinds}"
        text = yaml.safe_dump(template)
        for used in re.findall(r"\{\{\s*workflow\.parameters\.([\w-]+)\s*\}\}", text):
            assert used in params, f"{name} uses undeclared parameter {used}"
        inputs = {p["name"] for p in template.get("inputs", {}).get("parameters", [])}
        for used in re.findall(r"\{\{\s*inputs\.parameters\.([\w-]+)\s*\}\}", text):
            assert used in inputs, f"{name} uses undeclared input {used}"
        for group in template.get("steps", []):
            for step in group:
                assert step["template"] in templates, f"{name} -> {step['template']}"
                wanted = {p["name"] for p in templates[step["template"]].get("inputs", {}).get("parameters", [])}
                given = {p["name"] for p in step.get("arguments", {}).get("parameters", [])}
                assert wanted <= given, f"{step['name']} misses {wanted - given}"
        for mount in template.get("container", {}).get("volumeMounts", []):
            assert mount["name"] in volumes, f"{name} mounts unknown volume {mount['name']}"


def test_argo_workflow_follows_the_seed_workflow(workflow: dict[str, Any]) -> None:
    """create model, then K shards in parallel reading and writing the store, merge; the model is
    deleted on exit. No download or upload step: the processor and merge use s3:// themselves."""
    spec = workflow["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    groups = [[step["template"] for step in group] for group in templates[spec["entrypoint"]]["steps"]]
    assert groups == [["create-seldon-deployment"], ["process-shard"], ["merge"]]
    assert "volumeClaimTemplates" not in spec, "no shared volume: the data stays in the store"
    shard_step = templates[spec["entrypoint"]]["steps"][1][0]
    assert shard_step["withSequence"]["count"] == "{{workflow.parameters.shards}}"
    create, delete = templates["create-seldon-deployment"]["resource"], templates[spec["onExit"]]["resource"]
    assert create["action"] == "create" and "status.state == Available" in create["successCondition"]
    assert delete["action"] == "delete"
    values = {f"workflow.parameters.{p['name']}": p["value"] for p in spec["arguments"]["parameters"]}
    values.update({"workflow.name": "seldon-batch-x1", "workflow.uid": "uid-1", "workflow.namespace": "seldon"})
    created = yaml.safe_load(substitute(create["manifest"], values))
    deleted = yaml.safe_load(substitute(delete["manifest"], values))
    assert created["kind"] == deleted["kind"] == "SeldonDeployment"
    assert created["metadata"]["name"] == deleted["metadata"]["name"]
    assert created["spec"]["predictors"][0]["replicas"] == int(values["workflow.parameters.replicas"])
    for step in ("process-shard", "merge"):
        env = {e["name"]: e for e in templates[step]["container"]["env"]}
        assert env["AWS_ENDPOINT_URL"]["value"] == "{{workflow.parameters.store-endpoint}}"
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert set(env[variable]["valueFrom"]["secretKeyRef"]) == {"name", "key"}, "credentials from a Secret"


def test_argo_shard_arguments_parse_for_every_shard(workflow: dict[str, Any]) -> None:
    """Each shard's args, parameters filled in, parse with the real option table; all shards share
    one batch id, read the input object and write distinct objects, which the merge step's shell
    command (run here with echo) names exactly, with --input."""
    spec = workflow["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    values = {f"workflow.parameters.{p['name']}": p["value"] for p in spec["arguments"]["parameters"]}
    values.update({"workflow.uid": "uid-1", "workflow.namespace": "seldon"})
    k = int(values["workflow.parameters.shards"])
    bucket = values["workflow.parameters.bucket"]
    outputs, ids = set(), set()
    for index in range(k):
        args = [substitute(a, {**values, "inputs.parameters.shard-index": str(index)})
                for a in templates["process-shard"]["container"]["args"]]
        config = parse_processor(args).config()
        assert (config.shard_index, config.shard_count) == (index, k) and config.resume
        assert config.deployment_name == values["workflow.parameters.deployment-name"]
        assert config.host.startswith(f"{config.deployment_name}-default.seldon.svc")
        assert config.input_data_path == f"s3://{bucket}/{values['workflow.parameters.input-key']}"
        outputs.add(config.output_data_path)
        ids.add(config.batch_id)
    assert len(outputs) == k and ids == {"uid-1"} and all(o.startswith(f"s3://{bucket}/") for o in outputs)
    script, *positional = (substitute(a, values) for a in templates["merge"]["container"]["args"])
    assert script.startswith("exec seldon-batch merge ")
    shown = subprocess.run(["sh", "-c", script.replace("exec seldon-batch", "echo seldon-batch", 1), *positional],
                           capture_output=True, text=True, timeout=10, check=True).stdout.split()
    assert shown[:6] == ["seldon-batch", "merge", "-o", f"s3://{bucket}/{values['workflow.parameters.output-key']}",
                         "--input", f"s3://{bucket}/{values['workflow.parameters.input-key']}"]
    assert set(shown[6:]) == outputs and len(shown[6:]) == k


# -- Kubeflow ----------------------------------------------------------------------------------

def test_kubeflow_pipeline_is_valid_python() -> None:
    source = (K8S / "kubeflow_pipeline.py").read_text()
    tree = ast.parse(source)
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"build_pipeline", "process_shard", "merge_shards", "create_seldon_deployment"} <= names


@pytest.fixture(scope="module")
def kfp_python() -> Path:
    """The KFP v2 SDK in its own venv (scripts/setup-kfp-venv.sh; a minute the first time)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-kfp-venv.sh")], check=True, timeout=900)
    return KFP_PYTHON


def test_kubeflow_pipeline_compiles_with_the_kfp_v2_sdk(kfp_python: Path, tmp_path: Path) -> None:
    """The real compiler turns the pipeline into a package with K parallel shards reading and
    writing the store, a fan-in merge, an exit handler that deletes the model; no volume."""
    package = tmp_path / "pipeline.yaml"
    run = subprocess.run([str(kfp_python), str(K8S / "kubeflow_pipeline.py"), str(package), "--shards", "3"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    pipeline_spec, platform_spec = list(yaml.safe_load_all(package.read_text()))
    assert pipeline_spec["pipelineInfo"]["name"] == "seldon-batch"
    executors = pipeline_spec["deploymentSpec"]["executors"]
    for name in ("create-seldon-deployment", "process-shard", "merge-shards", "delete-seldon-deployment"):
        assert f"exec-{name}" in executors, name
    assert "exec-download-input" not in executors and "exec-upload-output" not in executors
    shard = executors["exec-process-shard"]["container"]
    assert shard["image"] == "seldon-batch-tx:0.1.0"
    assert "--shard-count" in shard["args"] and "--batch-id" in shard["args"] and "--resume" in shard["args"]
    text = package.read_text()
    assert "exit-handler-1" in text and "parallelismLimit: 3" in text and "raw: '[0, 1, 2]'" in text
    assert 'seldon-batch merge -o \\"s3://' in text or 'seldon-batch merge -o "s3://' in text
    for name in ("exec-process-shard", "exec-merge-shards"):
        env = {e["name"]: e["value"] for e in executors[name]["container"]["env"]}
        assert env["AWS_ENDPOINT_URL"].startswith("http://minio.")
    secrets = json.dumps(platform_spec)
    assert secrets.count('"AWS_SECRET_ACCESS_KEY"') == 2 and '"mountPath"' not in secrets
