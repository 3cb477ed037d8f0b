"""The Argo Workflow (checked field by field, its shard arguments parsed by the real option parser,
following the seed workflow) and the Kubeflow pipeline, compiled by the real KFP v2 SDK.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifest_helpers import K8S, ROOT, find, parse_processor

KFP_PYTHON = ROOT / ".venvs" / "kfp" / "bin" / "python"


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
