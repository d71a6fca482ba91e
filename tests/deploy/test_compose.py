"""deploy/compose.yaml: it parses, its services, images, mounts and dependencies refer to real
things, its commands are real commands, and its seed step and job run here against a real S3
server (moto) with the compose file's own environment, the scheduler swapped for a local one."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
import zarr

from geoseg.jobs.spec import load_job
from tests.deploy.commands import check_command
from tests.deploy.dockerfile import entrypoint

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` substitution."""
    return VARIABLE.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", value)


def mounts(service: dict) -> dict[str, Path]:
    """Container folder -> folder of this repository, for the service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):  # not a named volume
            found[target] = (COMPOSE.parent / source).resolve()
    return found


def command(service: dict) -> list[str]:
    """What the container runs: its entrypoint (else the image's, from the Dockerfile), then its command."""
    dockerfile = COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]
    return [*service.get("entrypoint", entrypoint(dockerfile)), *service.get("command", [])]


def test_services_build_the_project_image():
    services = compose()["services"]
    assert set(services) == {"s3", "scheduler", "worker", "seed", "job"}
    for name, service in services.items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile", name
        assert service["image"] == "geoseg:latest"
    assert services["worker"]["deploy"]["replicas"] == 2


def test_dependencies_name_services_and_the_job_waits_for_its_data():
    services = compose()["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", [])) <= set(services), name
    assert services["job"]["depends_on"]["seed"] == {"condition": "service_completed_successfully"}
    assert "worker" in services["job"]["depends_on"]


def test_commands_are_real_and_mounted_files_exist():
    for name, service in compose()["services"].items():
        for source in mounts(service).values():
            assert source.is_dir(), (name, source)
        check_command(command(service), mounts(service))


def test_addresses_point_at_the_services_that_listen():
    services = compose()["services"]
    scheduler = command(services["scheduler"])
    address = f"tcp://scheduler:{scheduler[scheduler.index('--port') + 1]}"
    assert command(services["worker"])[2] == address
    job = command(services["job"])
    assert job[:2] == ["geoseg", "run"] and job[job.index("--cluster") + 1] == address
    s3 = command(services["s3"])
    endpoint = urlsplit(interpolate(services["job"]["environment"]["AWS_ENDPOINT_URL"], {}))
    assert (endpoint.hostname, str(endpoint.port)) == ("s3", s3[s3.index("--port") + 1])


def test_run_records_are_kept_in_a_volume_that_outlives_the_containers():
    """Every service that runs ``geoseg run`` / ``geoseg batch`` writes its run records (and
    their HTML reports) into a writable named volume, not the container's home."""
    spec = compose()
    found = []
    for name, service in spec["services"].items():
        if command(service)[:2] not in (["geoseg", "run"], ["geoseg", "batch"]):
            continue
        runs = PurePosixPath(service["environment"].get("GEOSEG_RUNS_DIR", "~"))
        volumes = [volume.split(":") for volume in service.get("volumes", [])]
        (volume,) = [v for v in volumes if runs.is_relative_to(v[1])] or [None]
        assert volume is not None, f"{name}: GEOSEG_RUNS_DIR {runs} is on no volume"
        assert volume[0] in spec.get("volumes", {}) and volume[2:] != ["ro"], (name, volume)
        found.append(name)
    assert found == ["job"]


def test_credentials_come_from_the_environment_with_dummies_for_the_local_server():
    for name, service in compose()["services"].items():
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            value = service["environment"][key]
            assert value.startswith(f"${{{key}:-"), (name, key)  # the caller's value wins
            assert interpolate(value, {}) == "testing"  # moto's dummy, for the local server only
            assert interpolate(value, {key: "real"}) == "real"
    job = load_job(mounts(compose()["services"]["job"])["/config"] / "job.yaml")
    assert not job.input.storage_options and not job.output.storage_options


def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        check=False).returncode != 0:
        pytest.skip("docker compose is not installed")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_seed_and_job_run_against_s3_with_the_compose_environment(tmp_path, s3_server, monkeypatch):
    import s3fs

    from geoseg.cli import main

    services = compose()["services"]
    for key, value in services["job"]["environment"].items():
        monkeypatch.setenv(key, interpolate(value, {}))  # the workers started here inherit them
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["client_kwargs"]["endpoint_url"])
    monkeypatch.setenv("GEOSEG_RUNS_DIR", str(tmp_path / "runs"))
    s3fs.S3FileSystem.clear_instance_cache()  # clients made with another environment
    seed_argv, job_argv = command(services["seed"]), command(services["job"])
    config = mounts(services["job"])["/config"]
    seed = load_script(config / Path(seed_argv[1]).name)
    args = seed.parser().parse_args(seed_argv[2:])
    assert seed.seed(args.url, 512)  # a smaller scene than the stack's
    job_argv[job_argv.index("--cluster") + 1] = "local"  # instead of the compose scheduler
    monkeypatch.setattr(sys, "argv", [str(config / Path(a).name) if a.startswith("/config/") else a
                                      for a in job_argv])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    assert list((tmp_path / "runs").glob("*.json"))  # the record, where GEOSEG_RUNS_DIR says
    job = load_job(config / "job.yaml")
    scene = zarr.open_group(job.input.url, mode="r", storage_options=s3_server)
    mask = zarr.open_group(job.output.url, mode="r", storage_options=s3_server)
    accuracy = np.mean(mask["classes"][:] == scene["labels"][:])
    assert accuracy > 0.9, accuracy  # the bundled model against the scene's ground truth
    s3fs.S3FileSystem.clear_instance_cache()


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
