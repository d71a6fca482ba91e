"""deploy/kubernetes: every manifest validates offline against the Kubernetes schemas or the Dask
operator's CRD schema, the manifests agree with each other, their commands are real commands,
and the job and batch specs they carry are valid geoseg specs."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from distributed import Client, LocalCluster

from geoseg.jobs.spec import JobSpec
from tests.deploy.commands import BIN, check_command
from tests.deploy.k8s_schema import K8S_VERSIONS, load_documents, manifest_errors

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(K8S.glob("*.yaml"))
DOCUMENTS = [(path.name, i, doc) for path in MANIFESTS for i, doc in enumerate(load_documents(path))]


def resource(kind: str, name: str) -> dict:
    (doc,) = [doc for _, _, doc in DOCUMENTS if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return doc


def pod_specs(doc: dict) -> list[dict]:
    """Every pod spec inside a manifest: DaskCluster/WorkerGroup/DaskJob parts, a CronJob's pod."""
    spec = doc.get("spec", {})
    found = {
        "DaskCluster": lambda: [spec["scheduler"]["spec"], spec["worker"]["spec"]],
        "DaskWorkerGroup": lambda: [spec["worker"]["spec"]],
        "DaskJob": lambda: [spec["job"]["spec"], *pod_specs({"kind": "DaskCluster", **spec["cluster"]})],
        "CronJob": lambda: [spec["jobTemplate"]["spec"]["template"]["spec"]],
    }
    return found.get(doc["kind"], list)()


def container_command(container: dict) -> list[str]:
    """What the container runs: ``command`` replaces the image's entrypoint (geoseg), ``args``
    follow it."""
    return [*container.get("command", ["geoseg"]), *container.get("args", [])]


def test_the_recipes_are_all_here():
    kinds = sorted(doc["kind"] for _, _, doc in DOCUMENTS)
    assert kinds == ["ConfigMap", "CronJob", "DaskCluster", "DaskJob", "DaskWorkerGroup", "Namespace"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "index", "doc"), DOCUMENTS, ids=[f"{n}-{i}" for n, i, _ in DOCUMENTS])
def test_manifest_validates_offline(name, index, doc, version):
    assert manifest_errors(doc, version) == []


def test_validation_catches_wrong_types_and_unknown_fields():
    gpu = resource("DaskWorkerGroup", "geoseg-gpu")
    bad = copy.deepcopy(gpu)
    bad["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1
    bad["spec"]["worker"]["replicas"] = "one"
    errors = manifest_errors(bad)
    assert any("nvidia.com/gpu: 1 is not of type 'string'" in e for e in errors), errors
    assert any("spec.worker.replicas: 'one' is not of type 'integer'" in e for e in errors), errors
    bad = copy.deepcopy(resource("DaskCluster", "geoseg"))
    bad["spec"]["worker"]["replica"] = 2
    unknown = "spec.worker: Additional properties are not allowed ('replica' was unexpected)"
    assert manifest_errors(bad) == [unknown]
    cron = copy.deepcopy(resource("CronJob", "geoseg-nightly"))
    cron["spec"]["concurrencyPolicy"] = 0
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    errors = manifest_errors(cron)
    assert errors and ("concurrencyPolicy" in errors[0] or "comand" in errors[0]), errors


def test_all_resources_live_in_the_geoseg_namespace():
    namespace = resource("Namespace", "geoseg")["metadata"]["name"]
    assert {doc["metadata"].get("namespace") for _, _, doc in DOCUMENTS if doc["kind"] != "Namespace"} \
        == {namespace}


def test_gpu_worker_group_joins_the_cluster_on_gpu_nodes():
    cluster, gpu = resource("DaskCluster", "geoseg"), resource("DaskWorkerGroup", "geoseg-gpu")
    assert gpu["spec"]["cluster"] == cluster["metadata"]["name"]
    pod = gpu["spec"]["worker"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] and {"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"} in pod["tolerations"]
    (cpu_worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu_worker["resources"].get("limits", {})  # the default group is CPU


def test_cronjob_runs_the_nightly_batch_on_the_daskcluster_without_overlap():
    from dask_kubernetes.operator.controller.controller import build_job_pod_spec

    cron, cluster = resource("CronJob", "geoseg-nightly"), resource("DaskCluster", "geoseg")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["spec"]["schedule"].split()) == 5
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container_command(container) == ["geoseg", "batch", "/config/batch.yaml"]
    # the address the operator itself gives pods of this cluster
    meta = cluster["metadata"]
    operator_pod = build_job_pod_spec("x", meta["name"], meta["namespace"], {"containers": [{}]}, {}, {})
    assert operator_pod["spec"]["containers"][0]["env"] == [
        e for e in container["env"] if e["name"] == "DASK_SCHEDULER_ADDRESS"]


@pytest.mark.parametrize(("kind", "name", "key"), [("DaskJob", "geoseg-run", "job.yaml"),
                                                   ("CronJob", "geoseg-nightly", "batch.yaml")])
def test_the_config_map_is_mounted_where_the_command_reads_it(kind, name, key):
    doc = resource(kind, name)
    (pod,) = [p for p in pod_specs(doc) if any("/config/" in " ".join(container_command(c))
                                               for c in p["containers"])]
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = resource("ConfigMap", volume["configMap"]["name"])
    assert f"{mount['mountPath']}/{key}" in container_command(container)
    assert key in config_map["data"]


def test_the_config_map_carries_a_valid_job_and_batch_spec():
    data = resource("ConfigMap", "geoseg-config")["data"]
    job = JobSpec.from_dict(yaml.safe_load(data["job.yaml"]), "configmap job.yaml")
    assert job.cluster.kind is None and job.cluster.scheduler is None  # DASK_SCHEDULER_ADDRESS decides
    batch = pytest.importorskip("geoseg.jobs.batch", reason="geoseg batch is not in this checkout")
    spec = batch.BatchSpec.from_dict(yaml.safe_load(data["batch.yaml"]), "configmap batch.yaml")
    assert spec.cluster.scheduler is None


def test_a_retried_batch_pod_waits_out_the_leases_of_the_pod_that_died():
    """Its leases name another host, so they are not known dead: a retry that did not wait
    past their expiry would report every input leased, exit 0 and leave the night undone."""
    data = resource("ConfigMap", "geoseg-config")["data"]
    batch = pytest.importorskip("geoseg.jobs.batch", reason="geoseg batch is not in this checkout")
    spec = batch.BatchSpec.from_dict(yaml.safe_load(data["batch.yaml"]), "configmap batch.yaml")
    cron = resource("CronJob", "geoseg-nightly")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid" and cron["jobTemplate"]["spec"]["backoffLimit"] >= 1
    assert spec.wait > spec.lease_seconds


def env_value(entry: dict) -> str:
    """A container's environment entry: its value, or the ConfigMap key it names."""
    if "value" in entry:
        return entry["value"]
    ref = entry["valueFrom"]["configMapKeyRef"]
    return resource("ConfigMap", ref["name"])["data"][ref["key"]]


def test_run_records_go_where_the_outputs_go_not_into_the_pod():
    """Every container that runs ``geoseg run`` / ``geoseg batch`` keeps its run records (and
    their HTML reports) in the object store its spec writes outputs to: the pod's own
    ``~/.local/share/geoseg/runs`` is gone when the pod ends."""
    data = resource("ConfigMap", "geoseg-config")["data"]
    found = []
    for _, _, doc in DOCUMENTS:
        for pod in pod_specs(doc):
            for container in pod["containers"]:
                command = container_command(container)
                if command[:2] not in (["geoseg", "run"], ["geoseg", "batch"]):
                    continue
                env = {e["name"]: env_value(e) for e in container.get("env", [])}
                assert "GEOSEG_RUNS_DIR" in env, (doc["metadata"]["name"], container["name"])
                spec = yaml.safe_load(data[Path(command[2]).name])
                runs = urlsplit(spec.get("runs_dir") or env["GEOSEG_RUNS_DIR"])
                output = urlsplit(spec["output"].get("url") or spec["output"]["url_template"])
                assert runs.scheme not in ("", "file") and runs[:2] == output[:2], runs
                found.append(command[1])
    assert sorted(found) == ["batch", "run"]


def test_no_credentials_in_the_manifests():
    text = "\n".join(path.read_text() for path in MANIFESTS).lower()
    assert "secret_access_key" not in text and "aws_access_key_id" not in text
    for _, _, doc in DOCUMENTS:
        for pod in pod_specs(doc):
            for container in pod["containers"]:
                names = {e["name"] for e in container.get("env", [])}
                assert not {n for n in names if "KEY" in n or "SECRET" in n or "TOKEN" in n}


def test_every_container_command_is_a_real_command():
    commands = {tuple(container_command(c)) for _, _, doc in DOCUMENTS
                for pod in pod_specs(doc) for c in pod["containers"]}
    assert len(commands) >= 5
    for command in sorted(commands):
        check_command(list(command))


def test_the_daskcluster_worker_command_joins_a_scheduler_as_the_operator_starts_it(tmp_path):
    (container,) = resource("DaskCluster", "geoseg")["spec"]["worker"]["spec"]["containers"]
    with LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]},
               "DASK_SCHEDULER_ADDRESS": cluster.scheduler_address, "DASK_WORKER_NAME": "geoseg-w0"}
        # the kubelet expands $(VAR) from the container's environment
        command = [env[w[2:-1]] if w.startswith("$(") else w for w in container["command"]]
        command[0] = str(BIN / command[0])
        with open(tmp_path / "worker.log", "w") as log:
            worker = subprocess.Popen([*command, "--host", "127.0.0.1", "--local-directory",
                                       str(tmp_path)], env=env, stdout=log, stderr=log)
        try:
            client.wait_for_workers(1, timeout=120)
            info = client.scheduler_info(n_workers=-1)["workers"]
            threads = client.run(lambda: __import__("os").environ["GEOSEG_TORCH_THREADS"])
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    ((_, worker_info),) = info.items()
    assert worker_info["name"] == "geoseg-w0"
    assert str(worker_info["nthreads"]) == command[command.index("--nthreads") + 1]
    assert list(threads.values()) == ["1"]
