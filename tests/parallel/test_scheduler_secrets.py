"""A password in a Dask scheduler address (``tcp://user:password@host:port``), given in the job
spec, with ``--cluster`` / ``--scheduler`` or in ``DASK_SCHEDULER_ADDRESS``, shows nowhere: not
in what the command prints, the run record, its HTML report or the output's attributes. Each
command runs in a process of its own, so that everything it prints is searched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from geoseg.jobs.spec import JobSpec
from tests.cli import geoseg
from tests.conftest import job_dict, textured_image, write_geotiff

SPEC_PASSWORD = "SchedPass555"
CLI_PASSWORD = "CliPass"
CLI_ADDRESS = f"tcp://admin:{CLI_PASSWORD}@127.0.0.1:9"  # port 9: nothing listens there


def leaks(text: str, password: str) -> list[str]:
    """The secrets of a scheduler address found in ``text``: its password, its user info."""
    return [s for s in (password, f"admin:{password}") if s in text]


def stored_text(tmp_path: Path) -> str:
    """Every run record and HTML report, and every metadata document of the output."""
    runs = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    docs = [p for p in (tmp_path / "out.zarr").rglob("*") if p.is_file() and "/c/" not in str(p)]
    return "".join(p.read_text(errors="replace") for p in runs + docs)


def write_job(tmp_path: Path, **cluster: object) -> Path:
    write_geotiff(tmp_path / "scene.tif", textured_image(64, 64))
    data = {**job_dict("scene.tif", "builtin:demo-unet", "out.zarr"), "runs_dir": "runs"}
    if cluster:
        data["cluster"] = cluster
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(data))
    return job


def test_a_scheduler_password_in_the_spec_is_in_no_record_report_or_output(tmp_path):
    job = write_job(tmp_path, scheduler=f"tcp://admin:{SPEC_PASSWORD}@127.0.0.1:8786")
    result = geoseg("run", str(job), "--cluster", "threads", own_process=True,
                    env={"GEOSEG_LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    (record,) = (tmp_path / "runs").glob("*.json")
    assert json.loads(record.read_text())["job"]["cluster"]["scheduler"] == "tcp://127.0.0.1:8786"
    assert list((tmp_path / "runs").glob("*.html"))
    assert leaks(result.stdout + result.stderr + stored_text(tmp_path), SPEC_PASSWORD) == []


def test_the_redacted_spec_keeps_no_user_info_of_any_url():
    spec = JobSpec.from_dict({
        **job_dict("in.zarr", "m.safetensors", "out.zarr"),
        "cluster": {"scheduler": "tls://admin:SchedPass555@10.0.0.5:8786",
                    "jobqueue": {"job_script_prologue": ["pip download https://bob:BobPass99@pypi.example/x"]},
                    "kubernetes": {"env": {"PIP_INDEX": "https://carol:CarolPass7@pypi.example/simple"}}},
    })
    text = json.dumps(spec.redacted())
    assert "tls://10.0.0.5:8786" in text and "https://pypi.example/simple" in text
    assert [s for s in ("SchedPass555", "BobPass99", "CarolPass7", "admin", "bob:", "carol") if s in text] == []


@pytest.mark.parametrize(("args", "env"), [
    (["--cluster", CLI_ADDRESS], {}),
    (["--scheduler", CLI_ADDRESS], {}),
    ([], {"DASK_SCHEDULER_ADDRESS": CLI_ADDRESS, "GEOSEG_LOG_FORMAT": "json"}),
], ids=["cluster", "scheduler", "environment"])
def test_a_scheduler_password_from_the_command_line_is_in_no_message(tmp_path, args, env):
    result = geoseg("run", str(write_job(tmp_path)), *args, own_process=True, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in output, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert leaks(output, CLI_PASSWORD) == [], output


def test_a_batch_on_a_scheduler_with_a_password_names_it_without_the_password(tmp_path):
    write_geotiff(tmp_path / "scene.tif", textured_image(64, 64))
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({
        "name": "b", "inputs": {"glob": "*.tif"}, "job": {"model": {"path": "builtin:demo-unet"}},
        "output": {"url_template": "outs/{stem}.zarr"}}))
    result = geoseg("batch", str(batch), "--cluster", CLI_ADDRESS, own_process=True)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in output, output
    assert leaks(output, CLI_PASSWORD) == [], output
