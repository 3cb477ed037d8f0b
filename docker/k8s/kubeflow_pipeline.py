"""The seed's batch workflow as a Kubeflow Pipelines (v2 SDK) pipeline, with K shards in parallel.

create the SeldonDeployment -> K shard processors (ParallelFor), each streaming the input object and
uploading its own shard object -> merge the shard objects into the output object; the
SeldonDeployment is deleted by an exit handler, also when a step failed. No download or upload
step and no shared volume: the processor and merge read and write the store (MinIO here, through
AWS_ENDPOINT_URL), like the Argo workflow in argo-workflow.yaml.

    pip install 'kfp==2.17.3' 'kfp-kubernetes==2.17.3'
    python docker/k8s/kubeflow_pipeline.py seldon-batch-pipeline.yaml --shards 8

then upload the YAML in the Kubeflow UI (or ``kfp.Client().create_run_from_pipeline_package``). The
run's service account must be allowed to create, get and delete SeldonDeployments (argo-rbac.yaml),
and the Secret ``minio-credentials`` (accesskey, secretkey) must exist in the run's namespace.
tests/test_workflow_manifests.py compiles this file with the real SDK (scripts/setup-kfp-venv.sh).
"""

import argparse

from kfp import compiler, dsl, kubernetes

IMAGE = "seldon-batch-tx:0.1.0"
KUBECTL_IMAGE = "bitnami/kubectl:1.29.10"
ENDPOINT = "http://minio.minio.svc.cluster.local:9000"
STORE_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}

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
def process_shard(deployment: str, host: str, workers: int, batch_id: str, bucket: str, input_key: str,
                  output_key: str, shard_index: int, shard_count: int,
                  shard_object: dsl.OutputPath(str)) -> dsl.ContainerSpec:  # type: ignore[valid-type]
    """One shard: the lines with batch_index % shard_count == shard_index, streamed from the input
    object and uploaded as its own object (--resume: a retried shard keeps what that object holds)."""
    return dsl.ContainerSpec(
        image=IMAGE, command=["sh", "-c"],
        args=['out="s3://$0/$1.shard-$2-of-$3"; in="s3://$0/$4"; record="$5"; shift 6; '
              'seldon-batch-processor "$@" -i "$in" -o "$out" && printf %s "$out" > "$record"',
              bucket, output_key, shard_index, shard_count, input_key, shard_object,
              "--deployment-name", deployment, "--gateway-type", "seldon", "--host", host,
              "--workers", workers, "--batch-id", batch_id, "--shard-index", shard_index,
              "--shard-count", shard_count, "--resume"])


@dsl.container_component
def merge_shards(shard_objects: list, bucket: str, input_key: str,  # type: ignore[type-arg]
                 output_key: str) -> dsl.ContainerSpec:
    """Combine the shard objects in batch_index order into the output object; fails on a missing
    or duplicated line, and then uploads nothing.

    ``shard_objects`` (collected from every shard: their URLs, as JSON) makes this step wait for
    all of them; --input makes the merge check the total, so a short or missing shard fails it.
    """
    return dsl.ContainerSpec(
        image=IMAGE, command=["sh", "-c"],
        args=['exec seldon-batch merge -o "s3://$1/$3" --input "s3://$1/$2" '
              '$(python -c "import json, sys; print(\' \'.join(json.loads(sys.argv[1])))" "$0")',
              shard_objects, bucket, input_key, output_key])


def store_access(task: dsl.PipelineTask) -> None:
    """The object store's endpoint and credentials (the Secret minio-credentials) as AWS_* variables."""
    task.set_env_variable("AWS_ENDPOINT_URL", ENDPOINT)
    kubernetes.use_secret_as_env(task, secret_name="minio-credentials", secret_key_to_env=STORE_ENV)
    task.set_caching_options(False)


def build_pipeline(shards: int) -> dsl.graph_component.GraphComponent:
    """A pipeline with ``shards`` parallel processors (a compile-time fan-out, as K is)."""

    @dsl.pipeline(name="seldon-batch", description="Score an object through a SeldonDeployment with "
                                                   f"{shards} sharded batch processors")
    def pipeline(deployment_name: str = "sklearn", replicas: int = 4,
                 host: str = "sklearn-default.kubeflow-user.svc.cluster.local:8000", workers: int = 50,
                 bucket: str = "data", input_key: str = "batch/input-data.txt",
                 output_key: str = "batch/output-data.txt") -> None:
        cleanup = delete_seldon_deployment(name=deployment_name)
        cleanup.set_caching_options(False)
        with dsl.ExitHandler(cleanup):
            model = create_seldon_deployment(name=deployment_name, replicas=replicas)
            model.set_caching_options(False)
            with dsl.ParallelFor(items=list(range(shards)), parallelism=shards) as shard_index:
                shard = process_shard(deployment=deployment_name, host=host, workers=workers,
                                      batch_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, bucket=bucket, input_key=input_key,
                                      output_key=output_key, shard_index=shard_index, shard_count=shards)
                shard.after(model)
                store_access(shard)
            merged = merge_shards(shard_objects=dsl.Collected(shard.outputs["shard_object"]), bucket=bucket,
                                  input_key=input_key, output_key=output_key)
            store_access(merged)

    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description="Compile the seldon-batch pipeline to a YAML package")
    parser.add_argument("output", nargs="?", default="seldon-batch-pipeline.yaml")
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    compiler.Compiler().compile(build_pipeline(args.shards), args.output)


if __name__ == "__main__":
    main()
