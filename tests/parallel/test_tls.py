"""Encrypted clusters: `dask scheduler` and `dask worker` processes on 127.0.0.1 started with TLS
(as deploy/README.md shows) and encryption required, with a CA and a certificate generated
here. A plain tcp:// client is refused; `geoseg run` with `cluster.tls` runs the job over tls://
and writes the right output."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
import zarr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from distributed import Client, Security

import geoseg
from geoseg.errors import ClusterConfigError, JobSpecError
from geoseg.jobs.spec import JobSpec
from geoseg.parallel.cluster import connect, connected, with_cluster
from geoseg.parallel.cluster_spec import ClusterSpec
from tests.conftest import job_dict, textured_image, write_zarr
from tests.ports import free_port

BIN = Path(sys.executable).parent
QUICK = {"COLUMNS": "1000", "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "10s"}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _signed(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
            issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(folder: Path) -> dict[str, str]:
    """A CA, and a certificate and key it signed for 127.0.0.1, as PEM files in ``folder``."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _signed("geoseg test CA", ca_key, _name("geoseg test CA"), ca_key, ca=True)
    cert = _signed("geoseg dask", key, ca.subject, ca_key, ca=False)
    files = {"ca_file": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    files["ca_file"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {name: str(path) for name, path in files.items()}


def security(tls: dict[str, str]) -> Security:
    return Security(tls_ca_file=tls["ca_file"], tls_client_cert=tls["cert"], tls_client_key=tls["key"],
                    require_encryption=True)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """``(port, certificate files)`` of a scheduler and two workers speaking TLS only."""
    folder = tmp_path_factory.mktemp("tls")
    tls = make_certificates(folder)
    port = str(free_port())
    flags = ["--tls-ca-file", tls["ca_file"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    out = subprocess.DEVNULL
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                               "--port", port, "--no-dashboard", *flags], env=env, stdout=out, stderr=out)]
    for i in range(2):
        procs.append(subprocess.Popen(
            [BIN / "dask", "worker", f"tls://127.0.0.1:{port}", "--nthreads", "1", "--name", f"w{i}",
             "--no-dashboard", "--local-directory", str(folder / f"w{i}"), *flags],
            env=env, stdout=out, stderr=out))
    try:
        with Client(f"tls://127.0.0.1:{port}", security=security(tls), timeout=120) as client:
            client.wait_for_workers(2, timeout=120)  # minutes only on a machine under heavy load
            assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
        yield port, tls
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def geoseg_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg.cli", *args], check=False, capture_output=True,
                          text=True, timeout=240, env={**os.environ, **QUICK})


def write_job(tmp_path: Path, model_path: str, cluster: dict | None = None) -> tuple[Path, np.ndarray]:
    image = textured_image(128, 128, seed=7)
    data = job_dict(write_zarr(tmp_path / "in.zarr", image), model_path, str(tmp_path / "out.zarr"))
    if cluster is not None:
        data["cluster"] = cluster
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(data))
    return job, image


@pytest.mark.slow  # about 80 s on two busy cores: workers import torch and load the model
@pytest.mark.timeout(300)
def test_a_job_runs_over_tls_with_the_spec_certificates(tmp_path, model_path, tls_cluster):
    port, tls = tls_cluster
    job, image = write_job(tmp_path, model_path, {"scheduler": f"tls://127.0.0.1:{port}", "tls": tls})
    result = geoseg_cli("run", str(job))
    assert result.returncode == 0, result.stdout + result.stderr
    expected = geoseg.load_model(model_path).predict_image(image).argmax(0)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"))["classes"][:], expected)
    with Client(f"tls://127.0.0.1:{port}", security=security(tls), timeout=30) as client:
        counts = client.run(lambda: __import__("geoseg").models.load_counts())
    sha = geoseg.load_model(model_path).info.sha256
    assert sum(c.get(sha, 0) for c in counts.values()) >= 1, counts  # these workers ran it


@pytest.mark.timeout(300)  # the first test also waits for the cluster to start
def test_plain_tcp_is_refused_by_the_scheduler(tls_cluster):
    port, _ = tls_cluster
    started = time.monotonic()
    with pytest.raises(ClusterConfigError, match=f"Cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"), \
            dask.config.set({"distributed.comm.timeouts.connect": "10s"}), \
            connect(f"tcp://127.0.0.1:{port}"):
        pass
    assert time.monotonic() - started < 30


@pytest.mark.timeout(300)  # the first test also waits for the cluster to start
def test_a_client_whose_certificate_another_ca_signed_is_refused(tmp_path, tls_cluster):
    """Mutual TLS: the client trusts the scheduler, the scheduler does not trust the client."""
    port, tls = tls_cluster
    stranger = make_certificates(tmp_path)
    with pytest.raises(ClusterConfigError, match=f"Cannot reach the Dask scheduler at tls://127.0.0.1:{port}"), \
            dask.config.set({"distributed.comm.timeouts.connect": "10s"}), \
            connected(f"tls://127.0.0.1:{port}", security({**stranger, "ca_file": tls["ca_file"]})):
        pass


@pytest.mark.timeout(300)  # the first test also waits for the cluster to start
def test_cluster_tls_refuses_a_plain_tcp_address(model_path, tls_cluster):
    port, tls = tls_cluster
    with pytest.raises(JobSpecError, match="a tls:// scheduler address with tls"):
        JobSpec.from_dict({**job_dict("in.zarr", model_path, "out.zarr"),
                           "cluster": {"scheduler": f"tcp://127.0.0.1:{port}", "tls": tls}})
    with pytest.raises(JobSpecError, match="cluster.tls.ca_file: received '/no/ca.pem'"):
        JobSpec.from_dict({**job_dict("in.zarr", model_path, "out.zarr"),
                           "cluster": {"tls": {**tls, "ca_file": "/no/ca.pem"}}})
    with pytest.raises(ClusterConfigError, match="speaks TLS, but no certificates were given"), \
            connect(f"tls://127.0.0.1:{port}"):
        pass
    spec = JobSpec.from_dict({**job_dict("in.zarr", model_path, "out.zarr"), "cluster": {"tls": tls}})
    with pytest.raises(ClusterConfigError, match="cluster.tls is set, so encryption is required"), \
            connect(with_cluster(spec.cluster, f"tcp://127.0.0.1:{port}")):  # as --cluster does
        pass


@pytest.mark.timeout(300)  # the first test also waits for the cluster to start
def test_dask_tls_configuration_applies_without_cluster_tls(model_path, tls_cluster):
    """The DASK_DISTRIBUTED__COMM__TLS__* variables (dask's config) work as for any client."""
    port, tls = tls_cluster
    spec = JobSpec.from_dict({**job_dict("in.zarr", model_path, "out.zarr"),
                              "cluster": {"scheduler": f"tls://127.0.0.1:{port}"}})
    settings = {"distributed.comm.tls.ca-file": tls["ca_file"],
                "distributed.comm.tls.client.cert": tls["cert"],
                "distributed.comm.tls.client.key": tls["key"],
                "distributed.comm.require-encryption": True}
    with dask.config.set(settings), connect(spec.cluster) as client:
        assert client.submit(sum, [1, 2]).result() == 3


def test_the_cluster_section_in_deploy_readme_validates(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[2] / "deploy" / "README.md").read_text()
    section = readme.split("## Encrypted clusters (TLS)")[1].split("## ")[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    monkeypatch.chdir(tmp_path)
    make_certificates(tmp_path)
    for name in ("client.pem", "client.key"):
        (tmp_path / name).write_text("")
    cluster = ClusterSpec.model_validate(yaml.safe_load(block)["cluster"])
    assert cluster.scheduler == "tls://A:8786" and cluster.tls.cert == "client.pem"


def test_certificate_paths_are_relative_to_the_spec_file(tmp_path, monkeypatch):
    from geoseg.jobs.spec import load_job

    (tmp_path / "jobs" / "certs").mkdir(parents=True)
    make_certificates(tmp_path / "jobs" / "certs")
    spec = {**job_dict("in.zarr", "builtin:demo-unet", "out.zarr"),
            "cluster": {"scheduler": "tls://127.0.0.1:8786",
                        "tls": {"ca_file": "certs/ca.pem", "cert": "certs/cert.pem", "key": "certs/key.pem"}}}
    (tmp_path / "jobs" / "job.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    tls = load_job(tmp_path / "jobs" / "job.yaml").cluster.tls
    assert tls.ca_file == str(tmp_path / "jobs" / "certs" / "ca.pem")
    assert Path(tls.key).is_file()
