"""Budgets against hostile headers, on real files: a few-KB GeoTIFF declaring 10**12 pixels, a
model file whose metadata asks for a network of depth 30, an output declaring 10**8 chunks.

Whatever could allocate or run for hours without its protection runs in a subprocess with
its address space, CPU time and wall time capped (:func:`run_bounded`), so removing a
protection fails the test instead of the machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import yaml
import zarr
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg import budgets
from geoseg.errors import BudgetError, ModelFileError, SettingError
from geoseg.io.georef import GeoRef
from geoseg.io.output import OutputTarget, create_output
from geoseg.io.readers import open_source
from geoseg.jobs import checks, prepare
from geoseg.jobs.spec import JobSpec, load_job
from geoseg.models.modelfile import read_header, save_model
from tests.conftest import job_dict, random_unet, textured_image, write_zarr

HUGE = 1_000_000  # pixels per side the hostile TIFF declares
ADDRESS_SPACE = 6 << 30  # what a bounded subprocess may map (torch alone maps about 1 GiB)
REPO = Path(__file__).resolve().parents[1]
NORTH_UP = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 0.0)  # 10 m pixels


# --- a bounded subprocess ---------------------------------------------------------------------


@dataclass
class Finished:
    """A subprocess's exit code, output, wall time and peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int  # bytes

    @property
    def said(self) -> str:
        return " ".join((self.stdout + self.stderr).split())


SERVER = """
import json, os, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]),) * 2)
import dask.array, distributed, rasterio, torch, zarr  # once, before any fork
import geoseg.cli
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        resource.setrlimit(resource.RLIMIT_CPU, (120, 120))
        os.environ.update(job["env"])
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
        sys.stdin.close()
        if job["code"] is None:
            sys.argv = ["geoseg", *job["args"]]
            geoseg.cli.main()
        else:
            sys.argv = ["-c", *job["args"]]
            exec(compile(job["code"], "<string>", "exec"), {"__name__": "__main__"})
        sys.exit(0)
    print(pid, flush=True)
    _, status, usage = os.wait4(pid, 0)
    print(json.dumps([os.waitstatus_to_exitcode(status), time.perf_counter() - t0,
                      usage.ru_maxrss * 1024]), flush=True)
"""  # caps memory, imports geoseg and its libraries once, then runs each command (a JSON line
# on stdin: argv of geoseg, or Python code and its argv) in a forked child of its own, its CPU
# time capped; prints the child's pid, then its exit code, wall time and peak RSS


class Bounded:
    """A server process (:data:`SERVER`) whose forked children run the commands of this module.

    A child's peak RSS is its own from the fork on, counting the pages it shares with the
    server (geoseg and torch, dask, zarr and rasterio imported, as any command imports them):
    not this (large, long-lived) test process's high-water mark, which a child forked here
    would start with."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(ADDRESS_SPACE)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
                                     text=True, start_new_session=True)
        assert self.proc.stdout.readline() == "ready\n", "the bounded server did not start"

    def run(self, args: list[str], code: str | None, env: dict[str, str] | None,
            timeout: float) -> Finished:
        with tempfile.NamedTemporaryFile("r") as out, tempfile.NamedTemporaryFile("r") as err:
            job = {"args": args, "code": code, "env": env or {}, "stdout": out.name,
                   "stderr": err.name}
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            pid = int(self.proc.stdout.readline())
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                os.killpg(pid, signal.SIGKILL)
                self.proc.stdout.readline()
                pytest.fail(f"{args} ran past {timeout} s: unbounded")
            returncode, seconds, peak_rss = json.loads(self.proc.stdout.readline())
            return Finished(returncode, out.read(), err.read(), seconds, peak_rss)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_server: list[Bounded] = []


@pytest.fixture(scope="module", autouse=True)
def _bounded_server():
    """The server starts with this module's first bounded command and stops after its tests."""
    yield
    while _server:
        _server.pop().close()


def run_bounded(args: list[str], *, code: str | None = None, env: dict[str, str] | None = None,
                timeout: float = 120) -> Finished:
    """Run ``geoseg ARGS`` (or Python ``code`` with ``args``) in a process of its own, its
    memory and CPU time capped; kill it after ``timeout`` seconds."""
    if not _server or _server[0].proc.poll() is not None:
        _server[:] = [Bounded()]
    return _server[0].run(args, code, env, timeout)


def geoseg(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Finished:
    return run_bounded(list(args), env=env, timeout=timeout)


def python(code: str, *args: str, env: dict[str, str] | None = None) -> Finished:
    return run_bounded(list(args), code=code, env=env)


# --- the settings themselves ------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("1e11", 10**11), ("2147483648", 2**31), ("1E6", 10**6)])
def test_a_limit_is_a_whole_number_in_digits_or_exponent_form(monkeypatch, text, value):
    monkeypatch.setenv("GEOSEG_MAX_PIXELS", text)
    assert budgets.limit("GEOSEG_MAX_PIXELS") == value


@pytest.mark.parametrize("text", ["lots", "0", "-5", "1.5", "inf", "nan", ""])
def test_a_bad_limit_names_the_setting_and_what_it_takes(monkeypatch, text):
    monkeypatch.setenv("GEOSEG_MAX_TASKS", text)
    with pytest.raises(SettingError, match=r"GEOSEG_MAX_TASKS: received .*; expected a whole "
                                           r"number >= 1"):
        budgets.check_tasks(1, "a job")


def test_figures_read_as_the_messages_write_them():
    assert [budgets.figure(n) for n in (12, 999_999, 10**12, 15_264_649)] == [
        "12", "999999", "1e12", "1.53e7"]
    assert [budgets.size(n) for n in (100, 1_048_320, 2 << 30)] == ["100 B", "1023.8 KiB", "2 GiB"]


# --- a TIFF declaring 10**12 pixels -----------------------------------------------------------


@pytest.fixture(scope="module")
def huge_tiff(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real GeoTIFF of a few KB whose header declares 1,000,000 x 1,000,000 x 3 pixels:
    tiled, compressed, sparse (no tile written)."""
    path = tmp_path_factory.mktemp("hostile") / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=HUGE, height=HUGE, count=3, dtype="uint8",
                       tiled=True, blockxsize=32768, blockysize=32768, compress="deflate",
                       sparse_ok=True, crs="EPSG:32633", transform=NORTH_UP):
        pass
    assert path.stat().st_size < 20_000
    return str(path)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "unet.safetensors"
    save_model(random_unet(), str(path))
    return str(path)


def _job(input_url: str, model: str, tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    spec = job_dict(input_url, model, str(tmp_path / "out.zarr"), tile=None)
    path.write_text(yaml.safe_dump(spec))
    return path


PIXELS_REFUSED = f"declares {HUGE} x {HUGE} = 1e12 pixels; the limit is 1e11 (GEOSEG_MAX_PIXELS)"


def test_reading_the_huge_tiffs_metadata_refuses_it(huge_tiff):
    t0 = time.perf_counter()
    with pytest.raises(BudgetError, match=PIXELS_REFUSED.replace("(", r"\(").replace(")", r"\)")):
        open_source(huge_tiff)
    assert time.perf_counter() - t0 < 10


def test_prepare_refuses_the_huge_tiff_and_names_the_key(huge_tiff, small_model, tmp_path):
    spec = JobSpec.model_validate(job_dict(huge_tiff, small_model, str(tmp_path / "out.zarr")))
    with pytest.raises(BudgetError) as caught:
        prepare(spec)
    assert str(caught.value).startswith("input.url: input ") and PIXELS_REFUSED in str(caught.value)
    assert not (tmp_path / "out.zarr").exists()


def test_validate_refuses_the_huge_tiff_quickly_with_the_limit_and_the_setting(
        huge_tiff, small_model, tmp_path):
    job = _job(huge_tiff, small_model, tmp_path)
    result = geoseg("validate", str(job))
    assert result.returncode == 2, result.said
    assert PIXELS_REFUSED in result.said and "raise it if the raster is real" in result.said.lower()
    assert "Traceback" not in result.stderr and "task(s)" not in result.said
    assert result.seconds < 60
    assert result.peak_rss < 1 << 30, result.peak_rss


def test_raising_the_limits_lets_validate_pass(huge_tiff, small_model, tmp_path, monkeypatch):
    """Past the pixel budget the input's tiles meet the chunk budget, then the job's plan the
    task budget; past all three, validate says ok. The output would be planned, never
    written, by validate."""
    job = _job(huge_tiff, small_model, tmp_path)
    monkeypatch.setenv("GEOSEG_MAX_PIXELS", "1e12")
    with pytest.raises(BudgetError, match="stores chunks of 3 x 32768 x 32768 uint8, 3 GiB"):
        prepare(load_job(job))  # 32768 x 32768 x 3 bands a tile
    raised = {"GEOSEG_MAX_PIXELS": "1e12", "GEOSEG_MAX_CHUNK_BYTES": str(3 << 30)}
    monkeypatch.setenv("GEOSEG_MAX_CHUNK_BYTES", raised["GEOSEG_MAX_CHUNK_BYTES"])
    with pytest.raises(BudgetError, match=re.escape("tasks (chunks); the limit is 1e6 (GEOSEG_MAX_TASKS)")):
        prepare(load_job(job))
    both = geoseg("validate", str(job), env={**raised, "GEOSEG_MAX_TASKS": "1e7"})
    assert both.returncode == 0, both.said
    assert both.said.startswith("ok:") and "(3, 1000000, 1000000)" in both.said
    assert not (tmp_path / "out.zarr").exists()


# --- a job's tasks and read windows -----------------------------------------------------------


@pytest.fixture()
def small_job(tmp_path, small_model) -> JobSpec:
    src = write_zarr(tmp_path / "in.zarr", textured_image(200, 180))
    return JobSpec.model_validate(job_dict(src, small_model, str(tmp_path / "out.zarr")))


def test_a_job_of_more_tasks_than_the_budget_is_refused(small_job, monkeypatch):
    assert prepare(small_job).n_tasks == 12  # 4 x 3 chunks of 64
    monkeypatch.setenv("GEOSEG_MAX_TASKS", "11")
    with pytest.raises(BudgetError,
                       match=r"has 12 tasks \(chunks\); the limit is 11 \(GEOSEG_MAX_TASKS\)"):
        prepare(small_job)
    monkeypatch.setenv("GEOSEG_MAX_TASKS", "12")
    prepare(small_job)


def test_a_job_whose_tasks_read_more_than_the_window_budget_is_refused(small_job, monkeypatch):
    prepared = prepare(small_job)
    window = checks.largest_window(prepared)
    assert all(w > c for w, c in zip(window, prepared.chunks))  # the region and its halo
    n_bytes = budgets.window_bytes(window, 3, "uint8")
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", str(n_bytes - 1))
    with pytest.raises(BudgetError, match=rf"reads windows of 3 x {window[0]} x {window[1]} uint8 "
                       rf".*the limit is {n_bytes - 1} \(GEOSEG_MAX_WINDOW_BYTES\)"):
        prepare(small_job)
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", str(n_bytes))
    prepare(small_job)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.integers(1, 64))
def test_the_chunks_a_window_spans_at_most_are_counted_over_every_placement(window, chunk):
    spans = {(start + window - 1) // chunk - start // chunk + 1 for start in range(chunk)}
    monkey = pytest.MonkeyPatch()
    monkey.setenv("GEOSEG_MAX_WINDOW_CHUNKS", str(max(spans) ** 2))
    try:
        budgets.check_window_chunks((window, window), (chunk, chunk), (10**6, 10**6), "w")
        if max(spans) == 1:
            return  # no limit below one chunk
        monkey.setenv("GEOSEG_MAX_WINDOW_CHUNKS", str(max(spans) ** 2 - 1))
        with pytest.raises(BudgetError, match=f"span up to {budgets.figure(max(spans) ** 2)} "):
            budgets.check_window_chunks((window, window), (chunk, chunk), (10**6, 10**6), "w")
    finally:
        monkey.undo()


def test_a_chunk_as_wide_as_the_image_counts_once_across():
    """A window of 60,000 rows of 1-row strips as wide as the image reads 60,000 strips."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSEG_MAX_WINDOW_CHUNKS", "60000")
        budgets.check_window_chunks((60_000, 500), (1, 500), (100_000, 500), "strips")
        mp.setenv("GEOSEG_MAX_WINDOW_CHUNKS", "59999")
        with pytest.raises(BudgetError, match="span up to 60000 stored chunks of 1 x 500 pixels"):
            budgets.check_window_chunks((60_000, 500), (1, 500), (100_000, 500), "strips")


def test_a_job_whose_windows_span_too_many_stored_chunks_is_refused(tmp_path, small_model):
    """An input stored in 1 x 1 chunks passed validate, and each task then read about 3 million
    of them; the run showed no task done after minutes."""
    src = write_zarr(tmp_path / "in.zarr", textured_image(200, 180), chunks=(2, 2))
    job = JobSpec.model_validate(job_dict(src, small_model, str(tmp_path / "out.zarr")))
    window = checks.largest_window(prepare(job))
    spans = math.prod(w // 2 + 1 for w in window)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSEG_MAX_WINDOW_CHUNKS", str(spans - 1))
        with pytest.raises(BudgetError, match=rf"span up to {spans} stored chunks of 2 x 2 pixels; "
                                              rf"the limit is {spans - 1} \(GEOSEG_MAX_WINDOW_CHUNKS"
                                              r"\)\. Rechunk the input"):
            prepare(job)


# --- a model file whose metadata asks for depth 30 --------------------------------------------


def with_config(path: str, out: Path, **config: int) -> str:
    """A copy of model file ``path`` whose header's config has ``config`` merged in, its weights
    and their sha256 untouched (the hash covers weights, not metadata)."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    model = json.loads(header["__metadata__"]["model"])
    model["config"].update(config)
    header["__metadata__"]["model"] = json.dumps(model, sort_keys=True)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data after the header
    out.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])
    return str(out)


LOAD = """
import sys, time
from geoseg.models.modelfile import load_model
t0 = time.perf_counter()
try:
    load_model(sys.argv[1])
    print("loaded")
except Exception as exc:
    print(type(exc).__name__, exc)
print(f"after {time.perf_counter() - t0:.1f} s")
"""


def test_a_model_file_declaring_depth_30_is_refused_in_seconds_and_bounded_memory(
        small_model, tmp_path):
    deep = with_config(small_model, tmp_path / "deep.safetensors", depth=30)
    assert Path(deep).stat().st_size < 1 << 20
    result = python(LOAD, deep)
    assert result.returncode == 0, result.said
    assert result.said.startswith("BudgetError model file "), result.said
    assert '"depth": 30' in result.said and "(GEOSEG_MAX_MODEL_PARAMETERS)" in result.said
    assert result.seconds < 60
    assert result.peak_rss < 1 << 30, result.peak_rss


def test_validate_refuses_a_model_declaring_depth_30(small_model, tmp_path):
    deep = with_config(small_model, tmp_path / "deep.safetensors", depth=30)
    src = write_zarr(tmp_path / "in.zarr", textured_image(70, 60))
    result = geoseg("validate", str(_job(src, deep, tmp_path)))
    assert result.returncode == 2, result.said
    assert "model.path: model file" in result.said and "GEOSEG_MAX_MODEL_PARAMETERS" in result.said
    assert "Traceback" not in result.stderr
    assert result.peak_rss < 1 << 30


def test_a_network_counted_on_the_meta_device_past_the_budget_is_refused(small_model, tmp_path):
    """Depth 14 builds on the meta device (depth 30 overflows even there): 5.1e11 values."""
    deep = with_config(small_model, tmp_path / "deep.safetensors", depth=14)
    with pytest.raises(BudgetError, match=r"builds a network of 5.1e11 parameters; the limit is "
                                          r"1e9 \(GEOSEG_MAX_MODEL_PARAMETERS\)"):
        read_header(deep)
    result = python(LOAD, deep)
    assert "GEOSEG_MAX_MODEL_PARAMETERS" in result.said and result.peak_rss < 1 << 30, result.said


def test_the_model_budgets_are_settings(small_model, monkeypatch):
    header = read_header(small_model)
    n_values = _n_values(small_model)
    monkeypatch.setenv("GEOSEG_MAX_MODEL_PARAMETERS", str(n_values - 1))
    with pytest.raises(BudgetError,
                       match=rf"of {n_values} parameters; the limit is {n_values - 1}"):
        read_header(small_model)
    monkeypatch.setenv("GEOSEG_MAX_MODEL_PARAMETERS", str(n_values))
    monkeypatch.setenv("GEOSEG_MAX_MODEL_BYTES", "1000")
    with pytest.raises(BudgetError,
                       match=r"weights take .* the limit is 1000 \(GEOSEG_MAX_MODEL_BYTES\)"):
        read_header(small_model)
    monkeypatch.setenv("GEOSEG_MAX_MODEL_BYTES", str(8 * n_values))
    assert read_header(small_model).info == header.info


def _n_values(path: str) -> int:
    """How many values the tensors of a safetensors file hold, from its header."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    table = json.loads(data[8 : 8 + length])
    return sum(math.prod(entry["shape"]) for name, entry in table.items() if name != "__metadata__")


def test_a_header_whose_config_does_not_build_its_tensors_is_refused(small_model, tmp_path):
    edited = with_config(small_model, tmp_path / "deeper.safetensors", depth=4)
    with pytest.raises(ModelFileError, match=r"builds 118 tensors .* but the file holds 92 .* "
                                             r"metadata was edited"):
        read_header(edited)


# --- an output declaring 10**8 chunks ---------------------------------------------------------


@pytest.fixture(scope="module")
def vast_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real output whose manifest declares 10**4 x 10**4 chunks, three of them done: what a
    run of a 10**6 x 10**6 job leaves after its first chunks."""
    url = str(tmp_path_factory.mktemp("vast") / "out.zarr")
    target = create_output(url, shape=(HUGE, HUGE), chunks=(100, 100), georef=_georef(),
                           class_names=["a", "b"], class_dtype="uint8", nodata_class=255,
                           attrs={"job_identity": "x", "n_chunks": 10**8, "status": "complete",
                                  "model": "m"})
    for key in ("0.0", "5000.17", "9999.9999"):
        target.mark_done(key, "ab" * 32)
    return url


def _georef() -> GeoRef:
    return GeoRef.from_crs("EPSG:32633", NORTH_UP, None)


def test_status_on_an_output_declaring_1e8_chunks_is_bounded(vast_output):
    result = geoseg("status", vast_output, timeout=60)
    assert result.returncode == 0, result.said
    assert "3/100000000 task regions done" in result.said
    assert result.peak_rss < 1 << 30, result.peak_rss


@pytest.mark.timeout(60)  # read chunk by chunk, the manifest takes hours
def test_the_manifest_is_listed_not_read_chunk_by_chunk(vast_output):
    target = OutputTarget(vast_output)
    t0 = time.perf_counter()
    assert target.done_keys() == {"0.0", "5000.17", "9999.9999"}
    assert target.count_done() == 3
    assert time.perf_counter() - t0 < 10


def test_verify_refuses_an_output_past_the_task_budget_at_once(vast_output):
    result = geoseg("verify", vast_output, timeout=60)
    assert result.returncode == 2, result.said
    assert (f"output {vast_output} has 1e8 tasks (chunks); the limit is 1e6 (GEOSEG_MAX_TASKS)"
            in result.said), result.said
    assert "verify reads and hashes every chunk" in result.said
    assert result.peak_rss < 1 << 30


# --- bands a header declares ------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_bands(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Zarr array whose 1 KB zarr.json declares 10**9 bands of 16 x 16 pixels, and no chunk."""
    url = str(tmp_path_factory.mktemp("bands") / "bands.zarr")
    zarr.create_array(url, shape=(10**9, 16, 16), chunks=(1, 16, 16), dtype="uint8",
                      fill_value=0, dimension_names=["band", "y", "x"])
    return url


def nifti2_header(path: Path, dim: tuple[int, ...]) -> str:
    """A NIfTI-2 file of ``dim`` float32 voxels (64-bit sizes), of its header and no voxels."""
    header = nib.Nifti2Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(dim)
    with open(path, "wb") as f:
        header.write_to(f)
    return str(path)


BANDS_REFUSED = "declares 1e9 bands; the limit is 100000 (GEOSEG_MAX_BANDS)"


def test_a_zarr_declaring_1e9_bands_is_refused_before_any_band_is_named(many_bands):
    t0 = time.perf_counter()
    with pytest.raises(BudgetError, match=re.escape(BANDS_REFUSED)):
        open_source(many_bands)
    assert time.perf_counter() - t0 < 10


def test_a_nifti2_declaring_1e9_volumes_is_refused(tmp_path):
    url = nifti2_header(tmp_path / "volumes.nii", (16, 16, 16, 10**9))
    with pytest.raises(BudgetError, match=re.escape(
            "declares 1e9 volumes (header dim[4]); the limit is 100000 (GEOSEG_MAX_BANDS)")):
        open_source(url)


def test_info_on_1e9_bands_ends_at_once_in_bounded_memory(many_bands):
    result = geoseg("info", many_bands, timeout=60)
    assert result.returncode == 2, result.said
    assert BANDS_REFUSED in result.said and "internal error" not in result.said
    assert result.peak_rss < 1 << 30, result.peak_rss


def test_the_band_budget_is_a_setting(tmp_path, monkeypatch):
    url = write_zarr(tmp_path / "in.zarr", textured_image(32, 32))
    monkeypatch.setenv("GEOSEG_MAX_BANDS", "2")
    with pytest.raises(BudgetError, match=re.escape("declares 3 bands; the limit is 2")):
        open_source(url)
    monkeypatch.setenv("GEOSEG_MAX_BANDS", "3")
    assert open_source(url).shape[0] == 3


# --- stored chunks a header declares ----------------------------------------------------------


def declared_zarr(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...],
                  shards: tuple[int, ...] | None = None) -> str:
    """A zstd Zarr array of ``shape`` whose metadata declares ``chunks``, and no chunk written."""
    zarr.create_array(str(path), shape=shape, chunks=chunks, shards=shards, dtype="uint8",
                      fill_value=0, dimension_names=["band", "y", "x"],
                      compressors=zarr.codecs.ZstdCodec())
    return str(path)


CHUNK_REFUSED = ("stores chunks of 3 x 30000 x 30000 uint8, 2.5 GiB (2.7e9 bytes) decoded, and any "
                 "read decodes a whole chunk; the limit is 1.07e9 (GEOSEG_MAX_CHUNK_BYTES). "
                 "Rechunk the input")


def test_a_zarr_whose_one_chunk_decodes_to_2_5_gib_is_refused(tmp_path):
    url = declared_zarr(tmp_path / "bomb.zarr", (3, 30000, 30000), (3, 30000, 30000))
    with pytest.raises(BudgetError, match=re.escape(CHUNK_REFUSED)):
        open_source(url)


def test_validate_refuses_a_chunk_bomb_in_bounded_memory_with_a_tiny_window_budget(
        tmp_path, small_model):
    """The read windows are small, so the window budget passes; the stored chunk does not."""
    url = declared_zarr(tmp_path / "bomb.zarr", (3, 30000, 30000), (3, 30000, 30000))
    job = _job(url, small_model, tmp_path)
    result = geoseg("validate", str(job), env={"GEOSEG_MAX_WINDOW_BYTES": str(64 << 20)})
    assert result.returncode == 2, result.said
    assert CHUNK_REFUSED in result.said and "internal error" not in result.said
    assert result.peak_rss < 1 << 30, result.peak_rss


def test_a_shard_is_budgeted_by_its_inner_chunk(tmp_path):
    """A read decodes the inner chunks of a shard it touches, never the whole shard."""
    url = declared_zarr(tmp_path / "sharded.zarr", (3, 30720, 30720), (3, 512, 512),
                        shards=(3, 30720, 30720))
    assert open_source(url).stored_chunk == (3, 512, 512)


def test_a_geotiff_strip_of_all_its_bands_is_budgeted(tmp_path, monkeypatch):
    path = tmp_path / "strips.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4000, height=1000, count=3, dtype="uint8",
                       blockysize=1000, compress="deflate", sparse_ok=True, interleave="pixel"):
        pass  # one compressed strip of 3 x 1000 x 4000 bytes, decoded whole by any read
    monkeypatch.setenv("GEOSEG_MAX_CHUNK_BYTES", str(12_000_000 - 1))
    with pytest.raises(BudgetError, match=re.escape("stores chunks of 3 x 1000 x 4000 uint8")):
        open_source(str(path))
    monkeypatch.setenv("GEOSEG_MAX_CHUNK_BYTES", str(12_000_000))
    assert open_source(str(path)).shape == (3, 1000, 4000)


def test_a_tiff_stacks_page_is_budgeted(tmp_path, monkeypatch):
    """A read of a TIFF stack decodes whole pages (or tiles of them): each is a stored chunk."""
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((4, 300, 500), np.uint16), compression="zlib",
                     rowsperstrip=300, photometric="minisblack", metadata={"axes": "ZYX"})  # a page: a strip
    page = 300 * 500 * 2
    monkeypatch.setenv("GEOSEG_MAX_CHUNK_BYTES", str(page - 1))
    with pytest.raises(BudgetError, match=re.escape("stores chunks of 1 x 1 x 300 x 500 uint16")):
        open_source(str(path))
    monkeypatch.setenv("GEOSEG_MAX_CHUNK_BYTES", str(page))
    assert open_source(str(path)).shape[1:] == (4, 300, 500)


def test_a_strip_one_pixel_high_and_1e11_long_is_refused_before_its_coordinates(tmp_path):
    """It passes the pixel budget, but its x coordinates alone would take 800 GB."""
    url = declared_zarr(tmp_path / "strip.zarr", (1, 1, 10**11), (1, 1, 4096))
    zarr.open_array(url, mode="r+").attrs.update(
        {"grid_mapping": "spatial_ref", "GeoTransform": "0 10 0 0 0 -10"})
    with pytest.raises(BudgetError, match=re.escape("declares a side of 1e11 pixels, whose coordinates "
                                                    "alone (float64) take 745.1 GiB")):
        open_source(url)
