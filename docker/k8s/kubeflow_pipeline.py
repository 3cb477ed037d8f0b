"""The seed's batch workflow as a Kubeflow Pipelines (v2 SDK) pipeline, with K shards in parallel.

download the input + create the SeldonDeployment -> K shard processors (ParallelFor) -> merge ->
upload; the SeldonDeployment is deleted by an exit handler, also when a step failed. All steps
share one ReadWriteMany volume (kfp-kubernetes), like the Argo workflow in argo-workflow.yaml.

    pip install 'kfp==2.17.3' 'kfp-kubernetes==2.17.3'
    python docker/k8s/kubeflow_pipeline.py seldon-batch-pipeline.yaml --shards 8

then upload the YAML in the Kubeflow UI (or ``kfp.Client().create_run_from_pipeline_package``). The
run's service account must be allowed to create, get and delete SeldonDeployments (argo-rbac.yaml),
and the Secret ``minio-credentials`` (accesskey, secretkey) must exist in the run's namespace.
tests/test_docker_manifests.py compiles this file with the real SDK (scripts/setup-kfp-venv.sh).
"""

import argparse

from kfp import compiler, dsl, kubernetes

IMAGE = "seldon-batch-tx:0.1.0"
MC_IMAGE = "minio/mc:RELEASE.2024-11-21T17-21-54Z"
KUBECTL_IMAGE = "bitnami/kubectl:1.29.10"
ENDPOINT = "http://minio.minio.svc.cluster.local:9000"
MINIO_ENV = {"accesskey": "MC_ACCESS_KEY", "secretkey": "MC_SECRET_KEY"}
DATA = "/data"

#: The model, as kubectl reads it: $0 is the name and $1 the replicas of the create step's script.
SELDON_DEPLOYMENT = """apiVersion: machinelearning.seldon.io/v1
kind: SeldonDeployment
metadata:
  name: $0
spec:
  name: iris
  predictors:
    - name: default
      replicas: $1
      graph:
        name: classifier
        implementation: SKLEARN_SERVER
        modelUri: gs://seldon-models/v1.18.2/sklearn/iris
"""


@dsl.container_component
def download_input(bucket: str, key: str) -> dsl.ContainerSpec:
    """Copy the input from the object store onto the shared volume."""
    return dsl.ContainerSpec(
        image=MC_IMAGE, command=["sh", "-c"],
        args=[f'mc alias set store {ENDPOINT} "$MC_ACCESS_KEY" "$MC_SECRET_KEY" && '
              f'mc cp "store/$0/$1" {DATA}/input-data.txt', bucket, key])


@dsl.container_component
def create_seldon_deployment(name: str, replicas: int) -> dsl.ContainerSpec:
    """Create the model and wait until Seldon reports it Available."""
    return dsl.ContainerSpec(
        image=KUBECTL_IMAGE, command=["sh", "-c"],
        args=[f'cat <<EOF | kubectl apply -f -\n{SELDON_DEPLOYMENT}EOF\n'
              'kubectl wait --for=jsonpath="{.status.state}"=Available "sdep/$0" --timeout=15m', name, replicas])


@dsl.container_component
def delete_seldon_deployment(name: str) -> dsl.ContainerSpec:
    return dsl.ContainerSpec(image=KUBECTL_IMAGE, command=["kubectl"],
                             args=["delete", "--ignore-not-found", "sdep", name])


@dsl.container_component
def process_shard(deployment: str, host: str, workers: int, batch_id: str, shard_index: int, shard_count: int,
                  shard_file: dsl.OutputPath(str)) -> dsl.ContainerSpec:  # type: ignore[valid-type]
    """One shard: the lines with batch_index % shard_count == shard_index, into its own file."""
    return dsl.ContainerSpec(
        image=IMAGE, command=["sh", "-c"],
        args=['out="$0"; record="$1"; shift; seldon-batch-processor "$@" && printf %s "$out" > "$record"',
              f"{DATA}/input-data.out.shard-{shard_index}-of-{shard_count}.txt", shard_file,
              "--deployment-name", deployment, "--gateway-type", "seldon", "--host", host,
              "--workers", workers, "--input-data-path", f"{DATA}/input-data.txt", "--batch-id", batch_id,
              "--shard-index", shard_index, "--shard-count", shard_count])


@dsl.container_component
def merge_shards(shard_files: list, shard_count: int) -> dsl.ContainerSpec:  # type: ignore[type-arg]
    """Combine the shard outputs in batch_index order; fails on a missing or duplicated line.

    ``shard_files`` (collected from every shard) makes this step wait for all of them; --input
    makes the merge check the total, so a short or missing shard fails it.
    """
    return dsl.ContainerSpec(
        image=IMAGE, command=["sh", "-c"],
        args=[f'echo "merging $0" && exec seldon-batch merge -o {DATA}/output-data.txt '
              f'--input {DATA}/input-data.txt {DATA}/input-data.out.shard-*-of-"$1".txt', shard_files, shard_count])


@dsl.container_component
def upload_output(bucket: str, key: str) -> dsl.ContainerSpec:
    return dsl.ContainerSpec(
        image=MC_IMAGE, command=["sh", "-c"],
        args=[f'mc alias set store {ENDPOINT} "$MC_ACCESS_KEY" "$MC_SECRET_KEY" && '
              f'mc cp {DATA}/output-data.txt "store/$0/$1"', bucket, key])


def build_pipeline(shards: int) -> dsl.graph_component.GraphComponent:
    """A pipeline with ``shards`` parallel processors (a compile-time fan-out, as K is)."""

    @dsl.pipeline(name="seldon-batch", description="Score a file through a SeldonDeployment with "
                                                   f"{shards} sharded batch processors")
    def pipeline(deployment_name: str = "sklearn", replicas: int = 4,
                 host: str = "sklearn-default.kubeflow-user.svc.cluster.local:8000", workers: int = 50,
                 bucket: str = "data", input_key: str = "batch/input-data.txt",
                 output_key: str = "batch/output-data.txt") -> None:
        cleanup = delete_seldon_deployment(name=deployment_name)
        cleanup.set_caching_options(False)
        with dsl.ExitHandler(cleanup):
            volume = kubernetes.CreatePVC(pvc_name_suffix="-seldon-batch", access_modes=["ReadWriteMany"],
                                          size="10Gi")
            pvc = volume.outputs["name"]
            download = download_input(bucket=bucket, key=input_key)
            kubernetes.use_secret_as_env(download, secret_name="minio-credentials", secret_key_to_env=MINIO_ENV)
            model = create_seldon_deployment(name=deployment_name, replicas=replicas)
            with dsl.ParallelFor(items=list(range(shards)), parallelism=shards) as shard_index:
                shard = process_shard(deployment=deployment_name, host=host, workers=workers,
                                      batch_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, shard_index=shard_index,
                                      shard_count=shards)
                shard.after(download, model)
                shard.set_caching_options(False)
                kubernetes.mount_pvc(shard, pvc_name=pvc, mount_path=DATA)
            merged = merge_shards(shard_files=dsl.Collected(shard.outputs["shard_file"]), shard_count=shards)
            upload = upload_output(bucket=bucket, key=output_key).after(merged)
            kubernetes.use_secret_as_env(upload, secret_name="minio-credentials", secret_key_to_env=MINIO_ENV)
            for task in (download, model, merged, upload):
                task.set_caching_options(False)
            for task in (download, merged, upload):
                kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=DATA)
            kubernetes.DeletePVC(pvc_name=pvc).after(upload)

    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description="Compile the seldon-batch pipeline to a YAML package")
    parser.add_argument("output", nargs="?", default="seldon-batch-pipeline.yaml")
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    compiler.Compiler().compile(build_pipeline(args.shards), args.output)


if __name__ == "__main__":
    main()
