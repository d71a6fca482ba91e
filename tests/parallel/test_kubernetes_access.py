"""``--cluster kubernetes`` on a machine that cannot use a Kubernetes API: one clear error (exit 2)
saying what was found, what is expected and how to fix it, before any DaskCluster is made, so
no exit-time clean-up of dask-kubernetes fails after it. The command runs in a process of its
own: the exit-time clean-up prints only when that process ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geoseg.parallel.cluster import POD_NAMESPACE
from tests.cli import geoseg
from tests.conftest import job_dict, textured_image, write_geotiff

pytest.importorskip("dask_kubernetes.operator")


def said(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture()
def job(tmp_path) -> Path:
    write_geotiff(tmp_path / "scene.tif", textured_image(64, 64))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**job_dict("scene.tif", "builtin:demo-unet", "out.zarr"),
                                    "runs_dir": "runs"}))
    return path


@pytest.mark.skipif(POD_NAMESPACE.parent.is_dir(), reason="runs inside a pod: it has a service account")
def test_no_kube_config_is_one_clear_error_and_no_exit_traceback(tmp_path, job):
    home = tmp_path / "home"  # no ~/.kube/config either
    home.mkdir()
    result = geoseg("run", str(job), "--cluster", "kubernetes", own_process=True,
                    env={"KUBECONFIG": str(tmp_path / "nonexistent"), "HOME": str(home)})
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "internal error" not in output, output
    text = said(result.stderr)
    assert "cluster kind kubernetes: found no Kubernetes credentials" in text, output
    assert f"KUBECONFIG={tmp_path / 'nonexistent'}" in text, output  # what it looked at
    assert "service account" in text and "--cluster tcp://host:8786" in text, output  # expected; how to fix
    assert not (tmp_path / "out.zarr").exists()


def test_a_kube_config_whose_api_server_is_out_of_reach_names_it(tmp_path, job):
    config = tmp_path / "kube.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "KubeToken-123456"}}]}))
    result = geoseg("run", str(job), "--cluster", "kubernetes", own_process=True,
                    env={"KUBECONFIG": str(config)})
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "internal error" not in output, output
    text = said(result.stderr)
    assert "cannot reach the Kubernetes API server" in text and "--cluster tcp://host:8786" in text, output
    assert "KubeToken-123456" not in output
