"""deploy/Dockerfile and deploy/Dockerfile.cuda install the project exactly as the README says
(``make setup``, the step ``make demo`` and ``make test`` share), copy what that step reads,
and run ``geoseg``; building them is an opt-in slow test that needs a Docker daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.dockerfile import args, entrypoint, instructions, words

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "deploy" / "Dockerfile", ROOT / "deploy" / "Dockerfile.cuda"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run_steps(path: Path) -> list[str]:
    """Every shell command the RUN instructions chain with ``&&``."""
    return [step.strip() for word, rest in instructions(path) if word == "RUN" for step in rest.split("&&")]


def copied(path: Path) -> list[str]:
    """Sources of the COPY instructions (repository paths)."""
    return [source for word, rest in instructions(path) if word == "COPY"
            for source in words(rest, path)[:-1]]


def makefile_variable(name: str) -> str:
    (value,) = re.findall(rf"^{name}\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    return value


def test_the_readme_commands_share_make_setup():
    readme, makefile = (ROOT / "README.md").read_text(), (ROOT / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert re.search(r"^demo: setup$", makefile, re.MULTILINE)
    assert re.search(r"^test: setup$", makefile, re.MULTILINE)


def test_make_setup_installs_the_pinned_torch_and_the_project(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    plan = subprocess.run(["make", "-n", "-C", str(ROOT), "setup", f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert f"pip install --quiet {pin}" in plan
    assert re.search(r"pip install --quiet -e \"?\.\[test\]\"?", plan)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_installs_the_project_with_make_setup_only(dockerfile):
    steps = run_steps(dockerfile)
    assert "make setup" in steps
    assert not [s for s in steps if re.search(r"\bpip\b|\buv\b|setup\.py|conda", s)], steps
    (apt,) = [s for s in steps if s.startswith("apt-get install")]
    assert set(apt.split()[2:]) - {"-y", "--no-install-recommends"} <= {"make", "python3", "python3-venv"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_copies_what_make_setup_reads_before_running_it(dockerfile):
    sources = copied(dockerfile)
    needed = {"Makefile", "pyproject.toml", PYPROJECT["project"]["readme"]}
    needed |= {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
               and any(p.match(pattern) for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])}
    assert needed == set(sources), sources
    assert all((ROOT / source).exists() for source in sources)
    steps = instructions(dockerfile)
    last_copy = max(i for i, (word, _) in enumerate(steps) if word == "COPY")
    assert steps.index(("RUN", "make setup")) > last_copy


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_runs_geoseg_from_the_virtualenv_make_setup_made(dockerfile):
    assert entrypoint(dockerfile) == ["geoseg"]
    assert "geoseg" in PYPROJECT["project"]["scripts"]
    (workdir,) = [rest for word, rest in instructions(dockerfile) if word == "WORKDIR"]
    env = " ".join(rest for word, rest in instructions(dockerfile) if word == "ENV")
    assert f"PATH={workdir}/{makefile_variable('VENV')}/bin:" in env


def test_the_cpu_image_takes_the_cpu_torch_wheel():
    defaults = args(DOCKERFILES[0])
    assert defaults["PYTHON_IMAGE"].startswith("python:3.1")
    assert defaults["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL}" in " ".join(
        rest for word, rest in instructions(DOCKERFILES[0]) if word == "ENV")


def test_the_cuda_image_pairs_a_cuda_runtime_with_the_matching_torch_wheel():
    defaults = args(DOCKERFILES[1])
    image = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu[\d.]+", defaults["CUDA_IMAGE"])
    wheel = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", defaults["TORCH_INDEX_URL"])
    assert image and wheel, defaults
    assert wheel.group(1) == image.group(1) + image.group(2)  # e.g. 12.8 <-> cu128


def dockerignore_keeps(patterns: list[str], path: str) -> bool:
    """Whether Docker sends ``path`` with the build context: the last pattern matching it or a
    parent folder decides (``!`` keeps)."""
    parts = path.split("/")
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").rstrip("/"))
        if any(regex.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            keep = negate
    return keep


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    return re.compile(out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_dockerignore_sends_the_copied_files_and_not_the_virtualenv(dockerfile):
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    patterns = [line.strip() for line in ignore.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source in copied(dockerfile):
        files = [source] if (ROOT / source).is_file() else [
            str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts]  # sources and bundled models
        assert files and all(dockerignore_keeps(patterns, f) for f in files), source
    for unwanted in (".venv/bin/python", "demo-output/scene.zarr", ".git/HEAD", "geoseg/__pycache__/x.pyc"):
        assert not dockerignore_keeps(patterns, unwanted), unwanted


def _docker_daemon() -> str:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, timeout=60,
                                        check=False).returncode != 0:
        pytest.skip("no Docker daemon reachable")
    return docker


@pytest.mark.slow
def test_the_cpu_image_builds_and_runs_geoseg_and_dask():
    docker = _docker_daemon()
    tag = "geoseg:test-build"
    subprocess.run([docker, "build", "-f", str(DOCKERFILES[0]), "-t", tag, str(ROOT)], check=True,
                   timeout=3600)
    geoseg = subprocess.run([docker, "run", "--rm", tag, "run", "--help"], capture_output=True,
                            text=True, timeout=300, check=False)
    assert geoseg.returncode == 0 and "--cluster" in geoseg.stdout, geoseg.stderr
    dask = subprocess.run([docker, "run", "--rm", "--entrypoint", "dask", tag, "worker", "--help"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert dask.returncode == 0, dask.stderr
