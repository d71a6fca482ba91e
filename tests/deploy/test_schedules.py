"""Nightly runs on one machine: the systemd service and timer in deploy/systemd, and the cron
line in deploy/README.md, run ``geoseg batch`` once a night and never twice at once."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.commands import BIN, check_command

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERVICE, TIMER = DEPLOY / "systemd" / "geoseg-nightly.service", DEPLOY / "systemd" / "geoseg-nightly.timer"
CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def geoseg_command(argv: list[str]) -> list[str]:
    """``.../bin/geoseg ARGS`` as ``geoseg ARGS``."""
    program, *args = argv
    assert Path(program).name == "geoseg", argv
    return ["geoseg", *args]


def test_service_runs_the_batch_once_at_a_time():
    service = unit(SERVICE)["Service"]
    assert service["Type"] == "oneshot"  # started again while active: nothing happens
    argv = shlex.split(service["ExecStart"])
    assert geoseg_command(argv)[:2] == ["geoseg", "batch"]
    check_command(geoseg_command(argv))
    assert argv[0].startswith(service["WorkingDirectory"] + "/.venv/bin/")  # where make setup puts it


def test_timer_starts_the_service_every_night():
    timer = unit(TIMER)["Timer"]
    assert timer["Unit"] == SERVICE.name
    assert timer["OnCalendar"] == "*-*-* 02:00:00" and timer["Persistent"] == "true"
    assert unit(TIMER)["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path):
    """``systemd-analyze verify`` checks keys and that ExecStart is executable: point it at this
    installation's geoseg instead of /opt/geoseg."""
    service = SERVICE.read_text()
    (installed,) = re.findall(r"^ExecStart=(\S+)", service, re.MULTILINE)
    (tmp_path / SERVICE.name).write_text(service.replace(installed, str(BIN / "geoseg")))
    shutil.copy(TIMER, tmp_path / TIMER.name)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / SERVICE.name),
                             str(tmp_path / TIMER.name)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0 and "Unknown" not in result.stderr, result.stderr
    calendar = subprocess.run(["systemd-analyze", "calendar", unit(TIMER)["Timer"]["OnCalendar"]],
                              capture_output=True, text=True, timeout=60, check=False)
    assert calendar.returncode == 0 and "02:00:00" in calendar.stdout, calendar.stderr


def test_the_cron_line_runs_the_batch_under_a_lock():
    readme = (DEPLOY / "README.md").read_text()
    (block,) = re.findall(r"```crontab\n(.*?)```", readme, re.DOTALL)
    (line,) = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    fields = line.split(maxsplit=5)
    for field, (low, high) in zip(fields[:5], CRON_FIELDS):
        assert field == "*" or low <= int(field) <= high, field
    shell = shlex.split(fields[5])
    flock = shell.index("flock")
    assert shell[flock + 1] == "-n"  # a night whose previous run still holds the lock is skipped
    batch = shell[flock + 3:shell.index(">>")]
    assert geoseg_command(batch)[:2] == ["geoseg", "batch"]
    check_command(geoseg_command(batch))
