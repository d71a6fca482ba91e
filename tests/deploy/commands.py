"""Check a recipe's command with the command-line parser of the program it runs, in this
environment, without running it: the subcommand and every option must exist.

``geoseg`` goes through its typer app (with ``--help``: parsed, then nothing runs), ``dask
scheduler`` / ``dask worker`` through their click commands (found by the ``dask_cli`` entry
points, as the ``dask`` script finds them), a ``python SCRIPT`` through the script's
``parser()``, and other console scripts must be installed here with the options used.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath

BIN = Path(sys.executable).parent


def check_command(command: list[str], mounts: dict[str, Path] | None = None) -> None:
    """Fail (AssertionError) unless ``command`` parses; ``mounts`` maps container folders to
    folders of this repository, for scripts the command names."""
    program, *args = command
    checks = {"geoseg": _geoseg, "dask": _dask, "python": _python, "python3": _python}
    if program in checks:
        checks[program](args, mounts or {})
    else:
        _console_script(program, args)


def _geoseg(args: list[str], mounts: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from geoseg.cli import app

    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"geoseg {' '.join(args)}: {result.output}"


def _dask(args: list[str], mounts: dict[str, Path]) -> None:
    subcommand, *rest = args
    commands = {e.name: e for e in entry_points(group="dask_cli")}
    assert subcommand in commands, f"dask {subcommand}: no such command; dask has {sorted(commands)}"
    cli = commands[subcommand].load()
    known = {name for param in cli.params for name in (*param.opts, *param.secondary_opts)}
    unknown = [word for word in rest if word.startswith("-") and word.split("=")[0] not in known]
    assert not unknown, f"dask {subcommand}: no option(s) {unknown}"  # it passes unknown ones on
    cli.make_context(subcommand, list(rest))  # raises click.UsageError on bad values


def _python(args: list[str], mounts: dict[str, Path]) -> None:
    script, *rest = args
    path = host_path(script, mounts)
    assert path.is_file(), f"python {script}: no such file ({path} in this repository)"
    spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.parser().parse_args(rest)  # SystemExit(2) on unknown options


def _console_script(program: str, args: list[str]) -> None:
    assert (BIN / program).is_file(), f"{program}: not installed by the project's dependencies"
    usage = subprocess.run([BIN / program, "--help"], capture_output=True, text=True, timeout=120,
                           check=False)
    assert usage.returncode == 0, usage.stderr
    for word in args:
        if word.startswith("-"):
            assert word in usage.stdout, f"{program}: no option {word}"


def host_path(container_path: str, mounts: dict[str, Path]) -> Path:
    """Where a container path lies in this repository, through ``mounts``."""
    path = PurePosixPath(container_path)
    for target, source in mounts.items():
        if path.is_relative_to(target):
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not under a mounted folder ({sorted(mounts)})")
