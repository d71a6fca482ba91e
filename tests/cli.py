"""The ``geoseg`` command for tests: in this test process by default, in a process of its own
on request. Either way the answer is a ``CompletedProcess`` (exit code, stdout, stderr).

A command in a process of its own pays about 4 CPU-seconds importing torch, dask and zarr before
it does anything; in this process those imports are paid once. A test takes its own process
(``own_process=True``) when its assertions cover everything a process prints (no stray library
line, no secret anywhere, the log format of every record), when it needs a command prefix (a
mount namespace), or when what it sets is read once per process (Dask's configuration from the
environment, credentials a cached file system would keep).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

WIDE = {"COLUMNS": "1000"}  # rich wraps no table: a message is one line to search


def geoseg(*args: str, env: Mapping[str, str] | None = None, prefix: list[str] | None = None,
           cwd: str | Path | None = None, own_process: bool = False,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """``geoseg ARGS`` with ``env`` added to the environment, run here unless ``own_process``
    or a ``prefix`` (a command it runs under) asks for a process of its own."""
    variables = {**WIDE, **(env or {})}
    if own_process or prefix:
        return subprocess.run([*(prefix or []), sys.executable, "-m", "geoseg.cli", *args],
                              check=False, capture_output=True, text=True, timeout=timeout,
                              cwd=cwd, env={**os.environ, **variables})
    return _in_this_process(list(args), variables, cwd)


def _in_this_process(args: list[str], variables: dict[str, str],
                     cwd: str | Path | None) -> subprocess.CompletedProcess:
    from geoseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _environment(variables), _folder(cwd), _logging_kept(), _argv(["geoseg", *args]), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return subprocess.CompletedProcess(["geoseg", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _folder(cwd: str | Path | None) -> Iterator[None]:
    if cwd is None:
        yield
        return
    before = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    before, sys.argv = sys.argv, argv
    try:
        yield
    finally:
        sys.argv = before


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """The command installs its log handlers (and may capture warnings); the tests that run
    after it in this process find logging as it was."""
    from geoseg import logs

    names = (logs.ROOT, *logs.FOREIGN)
    saved = {name: _state(logging.getLogger(name)) for name in names}
    try:
        yield
    finally:
        logs.quiet_task_errors(False)
        logging.captureWarnings(False)
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def _state(logger: logging.Logger) -> tuple[list[logging.Handler], int, bool]:
    return list(logger.handlers), logger.level, logger.propagate


def threshold_run(folder: Path, name: str, *, size: int, chunk: int, seed: int) -> Path:
    """``geoseg run`` of a threshold at 128 on a ``size``-pixel square single-band Zarr in
    ``folder`` (``chunk``-pixel chunks in and out, records in ``folder/runs``); its output."""
    import yaml

    from tests.conftest import textured_image, write_zarr

    write_zarr(folder / "in.zarr", textured_image(size, size, bands=1, seed=seed),
               chunks=(chunk, chunk))
    spec = folder / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "name": name, "input": {"url": str(folder / "in.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [128]}},
        "output": {"url": str(folder / "out.zarr"), "chunks": [chunk, chunk]},
        "cluster": {"kind": "threads"}, "runs_dir": str(folder / "runs")}))
    done = geoseg("run", str(spec))
    assert done.returncode == 0, done.stderr
    return folder / "out.zarr"
