"""Remote storage: http(s) reads, retries of transient errors, clear errors for missing buckets,
missing keys and refused access (moto's S3 server with IAM checks), and http outputs refused.

Transient failures come from real servers and real filesystems: a local HTTP server that answers
503 to the next requests it is told to fail, and an fsspec filesystem over the local disk that
raises ConnectionResetError on its next reads or writes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.server
import json
import random
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import boto3
import fsspec
import numpy as np
import pytest
import rasterio
import zarr
from fsspec.implementations.local import LocalFileSystem
from moto.core.authorization import enable_iam_authentication
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import geoseg
from geoseg.errors import (
    BucketNotFoundError,
    CorruptInputError,
    JobSpecError,
    ParameterError,
    RangeRequestsError,
    RasterNotFoundError,
    ReadOnlyStorageError,
    SettingError,
    StorageAccessError,
    StorageUnavailableError,
)
from geoseg.io import remote
from geoseg.io.georef import GeoRef
from geoseg.io.output import create_output
from geoseg.jobs import JobSpec
from tests.conftest import CRS, TRANSFORM, textured_image, write_geotiff, write_zarr

SECRET = "SUPER-SECRET-VALUE-123"  # the s3_server fixture's secret


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEG_RETRY_DELAY", "0.01")
    monkeypatch.setenv("GEOSEG_RETRIES", "4")


# --- a real HTTP server with byte ranges, byte counts and injected 503s -----------------------


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte ranges (206), folder listings, and 503 on demand."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        start = re.fullmatch(r"bytes=(\d*)-\d*", self.headers.get("Range", ""))
        if self.server.take_failure(int(start.group(1) or 0) if start else None):
            self.send_response(503, "Slow Down")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = Path(self.translate_path(self.path))
        self.server.record(self.path)
        if path.is_dir() and not self.server.listings:
            self.send_error(403)  # like a web server without an index page
            return
        if path.is_dir():
            listing = self.send_head()  # a folder listing, or a redirect to "folder/"
            if listing is not None:
                with listing:
                    self._send(listing.read() if body else b"")
            return
        if not path.is_file():
            self.send_error(404)
            return
        stat = path.stat()
        start, stop = self._range(stat.st_size)
        self.send_header("ETag", f'"{stat.st_mtime_ns}-{stat.st_size}"')  # as web servers send it
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                self._send(f.read(stop - start))

    def _range(self, size: int) -> tuple[int, int]:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match is None or not self.server.ranges:  # no Range support: the whole file
            self.send_response(200)
            return 0, size
        first, last = match.groups()
        start = int(first) if first else max(size - int(last), 0)
        stop = min(int(last) + 1, size) if first and last else size
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        return start, stop

    def _send(self, data: bytes) -> None:
        for i in range(0, len(data), 2**16):  # counted as sent, piece by piece
            self.wfile.write(data[i : i + 2**16])
            self.server.count(len(data[i : i + 2**16]))


class CountingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
        self.lock = threading.Lock()
        self.bytes_sent = self.fail_next = self.failed = 0
        self.fail_from: int | None = None  # fail only ranges starting there or past it
        self.listings, self.ranges, self.paths = True, True, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take_failure(self, start: int | None = None) -> bool:
        with self.lock:
            if self.fail_next <= 0 or (self.fail_from is not None
                                       and (start is None or start < self.fail_from)):
                return False
            self.fail_next -= 1
            self.failed += 1
            return True

    def record(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)

    def count(self, n: int) -> None:
        with self.lock:
            self.bytes_sent += n

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent = self.fail_next = self.failed = 0
            self.fail_from, self.listings, self.paths = None, True, []


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("www")


@pytest.fixture(scope="module")
def http_server(http_root: Path) -> Iterator[CountingServer]:
    server = CountingServer(http_root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(http_server: CountingServer) -> CountingServer:
    http_server.reset()
    return http_server


def write_big_geotiff(path: Path) -> np.ndarray:
    """A 3 x 2048 x 2048 uncompressed, 256-tiled GeoTIFF of incompressible noise (12 MiB)."""
    image = np.random.default_rng(0).integers(0, 255, size=(3, 2048, 2048), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=2048,
        height=2048,
        count=3,
        dtype="uint8",
        crs=CRS,
        transform=TRANSFORM,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as dst:
        dst.write(image)
    return image


@pytest.fixture(scope="module")
def big_tif(http_root: Path) -> np.ndarray:
    return write_big_geotiff(http_root / "big.tif")


def test_http_geotiff_window_reads_a_small_part_of_the_file(served, big_tif, http_root):
    url = f"{served.url}/big.tif"
    raster = geoseg.open_raster(url, chunks=256)  # one 256 x 256 tile per task
    metadata = served.bytes_sent
    window = raster[:, 256:512, 512:768].values
    np.testing.assert_array_equal(window, big_tif[:, 256:512, 512:768])
    size = (http_root / "big.tif").stat().st_size
    assert 0 < metadata < 0.1 * size, (metadata, size)
    assert served.bytes_sent - metadata < 0.1 * size, (served.bytes_sent - metadata, size)
    with rasterio.open(http_root / "big.tif") as ds:
        assert rasterio.crs.CRS.from_wkt(raster.attrs["crs"]) == ds.crs
        assert tuple(raster.attrs["transform"]) == tuple(ds.transform)[:6]


def test_http_geotiff_from_a_server_that_refuses_folder_listings(served, big_tif):
    """Many servers (and buckets readable without s3:ListBucket) refuse to list a folder but
    serve its files; GDAL's search for sidecar files must neither fail on that nor cost a
    request per task."""
    served.listings = False
    raster = geoseg.open_raster(f"{served.url}/big.tif", chunks=256)
    np.testing.assert_array_equal(raster[:, 256:512, 512:768].values, big_tif[:, 256:512, 512:768])
    assert set(served.paths) == {"/big.tif"}, served.paths  # no sidecars, no Zarr probes
    container = remote.GuardedContainer(fsspec.filesystem("http", skip_instance_cache=True))
    with remote.guarded_reads():
        assert container.ls(f"{served.url}/") == []  # refused: no names, and no error kept


@pytest.fixture
def whole_files_server(http_root: Path) -> Iterator[CountingServer]:
    """A server of its own that ignores Range requests: the whole files it still sends after a
    client gave up are not counted by the shared server the other tests measure."""
    server = CountingServer(http_root)
    server.ranges = False
    with serving(server):
        yield server


@contextlib.contextmanager
def serving(server: CountingServer) -> Iterator[CountingServer]:
    """``server`` answering on a thread of its own while the block runs, then closed."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("part", ["metadata", "pixels"])
def test_a_server_without_range_requests_is_named_not_the_file(whole_files_server, big_tif,
                                                                http_root, part):
    """A server that answers every request with the whole file (Python's own http.server
    does) cannot serve a raster in parts: the file is fine, so it must not be called corrupt.
    A striped GeoTIFF keeps its metadata at its end (found while opening it); the tiled one
    at its start (found while reading pixels)."""
    write_geotiff(http_root / "striped.tif", textured_image(256, 256), tiled=False)
    name = "striped.tif" if part == "metadata" else "big.tif"
    url = f"{whole_files_server.url}/{name}"
    with pytest.raises(RangeRequestsError, match=rf"/{name}: the HTTP server sends whole files "
                                                 r"only \(it ignores Range requests\)") as caught:
        geoseg.open_raster(url, chunks=256)[:, -256:, -256:].compute()
    assert "corrupt" not in str(caught.value) and caught.value.__cause__ is None


def test_http_zarr_array_and_group(served, http_root):
    image = textured_image(300, 260, seed=2)
    write_zarr(http_root / "scene.zarr", image, chunks=(64, 64))
    group = zarr.open_group(str(http_root / "g.zarr"), mode="w")
    group.create_array(
        "image",
        shape=image.shape,
        chunks=(3, 100, 100),
        dtype="uint8",
        dimension_names=["band", "y", "x"],
    )[:] = image
    raster = geoseg.open_raster(f"{served.url}/scene.zarr", chunks=64)
    np.testing.assert_array_equal(raster[:, 64:128, :64].values, image[:, 64:128, :64])
    one_chunk = served.bytes_sent
    assert one_chunk < image.nbytes / 4  # metadata and one of 25 chunks, not the array
    np.testing.assert_array_equal(raster.values, image)
    grouped = geoseg.open_raster(f"{served.url}/g.zarr", variable="image")
    np.testing.assert_array_equal(grouped.values, image)


def test_http_missing_file_is_a_clear_error(served):
    with pytest.raises(
        RasterNotFoundError, match=r"No raster at http://127\.0\.0\.1:\d+/missing\.tif"
    ):
        geoseg.open_raster(f"{served.url}/missing.tif")


def test_http_503s_are_retried_on_open_and_on_window_reads(served, big_tif):
    url = f"{served.url}/big.tif"
    served.fail_next = 2
    raster = geoseg.open_raster(url)
    assert served.failed == 2
    served.fail_next = 3
    np.testing.assert_array_equal(raster[:, :300, 1800:].values, big_tif[:, :300, 1800:])
    assert served.failed == 5 and served.fail_next == 0


def test_a_503_on_a_tile_many_threads_wait_for_is_retried_by_each(served, big_tif):
    """Threads reading one window wait for the tile one of them fetches: when that fetch meets
    a 503, the waiters read the tile themselves (the error is told apart as transient in the
    thread that met it only), rather than calling the file corrupt."""
    from concurrent.futures import ThreadPoolExecutor

    from geoseg.io.readers import open_source

    source = open_source(f"{served.url}/big.tif", {}).with_read_cache()
    np.testing.assert_array_equal(source.read((slice(0, 256), slice(0, 256))), big_tif[:, :256, :256])
    served.fail_from, served.fail_next = 1 << 20, 1  # the next pixel range past the header
    window = (slice(1024, 1280), slice(1024, 1280))
    with ThreadPoolExecutor(8) as pool:
        reads = [pool.submit(source.read, window) for _ in range(8)]
        for read in reads:
            np.testing.assert_array_equal(read.result(), big_tif[:, 1024:1280, 1024:1280])
    assert served.failed == 1


def test_a_geotiff_replaced_during_a_run_is_read_as_it_is_now(served, http_root):
    """Tasks keep a file's header for the next ones under its version (ETag): a file replaced
    meanwhile, by one tiled otherwise, is read whole again, never its new bytes through its
    old header (which decoded noise)."""
    import os

    from geoseg.io.readers import open_source

    path = http_root / "moving.tif"
    first, second = textured_image(512, 512, seed=1), textured_image(512, 512, seed=2)
    write_geotiff(path, first)
    source = open_source(f"{served.url}/moving.tif", {}).with_read_cache()
    np.testing.assert_array_equal(source.read((slice(0, 64), slice(0, 64))), first[:, :64, :64])
    write_geotiff(path, second, tiled=False)
    later = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))
    window = (slice(256, 320), slice(256, 320))
    np.testing.assert_array_equal(source.read(window), second[:, 256:320, 256:320])


def test_http_zarr_chunk_503s_are_retried(served, http_root):
    image = textured_image(128, 128, seed=5)
    write_zarr(http_root / "retry.zarr", image, chunks=(64, 64))
    raster = geoseg.open_raster(f"{served.url}/retry.zarr")
    served.fail_next = 2
    np.testing.assert_array_equal(raster.values, image)
    assert served.failed == 2


def test_a_server_that_keeps_failing_gives_up_with_the_url(served, big_tif, monkeypatch):
    raster = geoseg.open_raster(f"{served.url}/big.tif")
    monkeypatch.setenv("GEOSEG_RETRIES", "2")
    served.fail_next = 1000
    with pytest.raises(
        StorageUnavailableError,
        match=r"Reading http://127\.0\.0\.1:\d+/big\.tif failed "
        r"3 time\(s\).*503.*GEOSEG_RETRIES",
    ) as info:
        raster[:, :10, :10].compute()
    assert isinstance(info.value, ConnectionError) and info.value.__cause__ is None


def test_http_output_is_refused_before_anything_runs(served, tmp_path, model_path):
    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64))
    spec = {
        "input": {"url": src},
        "model": {"path": model_path},
        "output": {"url": f"{served.url}/out.zarr"},
    }
    with pytest.raises(JobSpecError, match=r"output\.url: received 'http://.*read-only"):
        JobSpec.from_dict(spec)
    with pytest.raises(
        ReadOnlyStorageError,
        match=r"Output http://127\.0\.0\.1:\d+/out\.zarr: http:// "
        r"is read-only",
    ):
        create_output(
            f"{served.url}/out.zarr",
            shape=(8, 8),
            chunks=(8, 8),
            georef=GeoRef(),
            class_names=["a", "b"],
            class_dtype="uint8",
            nodata_class=255,
        )
    assert served.bytes_sent == 0


# --- a filesystem that fails its next reads or writes ------------------------------------------


class FlakyFileSystem(LocalFileSystem):
    """The local disk under ``flaky://``, raising ConnectionResetError on the next reads or
    writes it is told to fail (whole-object reads and writes, and reads of open files)."""

    protocol = ("flaky",)
    lock = threading.Lock()
    pending: ClassVar[dict[str, int]] = {"read": 0, "write": 0}
    calls: ClassVar[dict[str, int]] = {"read": 0, "write": 0}
    error: type[Exception] = ConnectionResetError

    def __init__(self, **kwargs: object) -> None:
        super().__init__(auto_mkdir=True, **kwargs)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        return LocalFileSystem._strip_protocol(path.removeprefix("flaky://"))

    @classmethod
    def fail(
        cls, reads: int = 0, writes: int = 0, error: type[Exception] = ConnectionResetError
    ) -> None:
        with cls.lock:
            cls.pending.update(read=reads, write=writes)
            cls.calls.update(read=0, write=0)
            cls.error = error

    @classmethod
    def fault(cls, kind: str) -> None:
        with cls.lock:
            cls.calls[kind] += 1
            if cls.pending[kind] > 0:
                cls.pending[kind] -= 1
                raise cls.error(f"injected {kind} failure")

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: object
    ) -> bytes:
        self.fault("read")
        return super().cat_file(path, start=start, end=end, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: object) -> None:
        self.fault("write")
        return super().pipe_file(path, value, mode=mode, **kwargs)

    def _open(self, path: str, mode: str = "rb", **kwargs: object) -> Any:
        f = super()._open(path, mode, **kwargs)
        if "r" in mode:
            read = f.read
            f.read = lambda *args: (self.fault("read"), read(*args))[1]
        return f


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FlakyFileSystem]]:
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    monkeypatch.setenv("GEOSEG_OUTPUT_SCHEMES", "file,flaky")  # as a user allows their own scheme
    FlakyFileSystem.fail()
    yield FlakyFileSystem
    FlakyFileSystem.fail()


def test_output_writes_retry_connection_resets(tmp_path, flaky):
    url = f"flaky://{tmp_path}/out.zarr"
    target = create_output(
        url,
        shape=(20, 30),
        chunks=(10, 10),
        georef=GeoRef(),
        class_names=["a", "b"],
        class_dtype="uint8",
        nodata_class=255,
    )
    block = np.arange(100, dtype=np.uint8).reshape(10, 10)
    flaky.fail(writes=2)
    target.write("classes", (slice(10, 20), slice(0, 10)), block)
    target.mark_done("1.0", "ab" * 32)
    assert flaky.pending["write"] == 0 and flaky.calls["write"] > 2
    on_disk = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_array_equal(on_disk["classes"][10:20, :10], block)
    assert target.done_keys() == {"1.0"}


def test_permanent_errors_are_not_retried(tmp_path, flaky):
    target = create_output(
        f"flaky://{tmp_path}/out.zarr",
        shape=(10, 10),
        chunks=(10, 10),
        georef=GeoRef(),
        class_names=["a", "b"],
        class_dtype="uint8",
        nodata_class=255,
    )
    flaky.fail(writes=1, error=PermissionError)
    with pytest.raises(
        StorageAccessError, match=r"Writing flaky:.*/out\.zarr failed: access denied"
    ):
        target.write("classes", (slice(0, 10), slice(0, 10)), np.zeros((10, 10), np.uint8))
    assert flaky.calls["write"] == 1


def test_zarr_reads_retry_connection_resets(tmp_path, flaky):
    image = textured_image(100, 90, seed=7)
    write_zarr(tmp_path / "in.zarr", image, chunks=(32, 32))
    raster = geoseg.open_raster(f"flaky://{tmp_path}/in.zarr")
    flaky.fail(reads=3)
    np.testing.assert_array_equal(raster.values, image)
    assert flaky.pending["read"] == 0


def test_geotiff_reads_inside_gdal_retry_without_crashing(tmp_path, flaky):
    """GDAL reads remote GeoTIFFs through Python files; an error raised inside such a read must
    come back as the original error (and be retried), not abort the process."""
    image = textured_image(256, 256, seed=8)
    write_geotiff(tmp_path / "a.tif", image)  # 64 x 64 tiles
    raster = geoseg.open_raster(f"flaky://{tmp_path}/a.tif", chunks=128)
    for failures in (1, 2, 4):
        flaky.fail(reads=failures)
        np.testing.assert_array_equal(raster.values, image)
        assert flaky.pending["read"] == 0
    flaky.fail(reads=10**6)
    with pytest.raises(StorageUnavailableError, match=r"failed 5 time\(s\).*ConnectionResetError"):
        raster[:, :64, :64].compute()


# --- the retry policy and what counts as transient ----------------------------------------------


def test_backoff_doubles_is_capped_and_jittered():
    policy = remote.RetryPolicy(retries=6, base_delay=0.5, max_delay=3.0, jitter=0.5)
    rng = random.Random(0)
    delays = [[policy.delay(r, rng) for r in range(1, 7)] for _ in range(200)]
    for retry, full in enumerate([0.5, 1.0, 2.0, 3.0, 3.0, 3.0]):
        column = [d[retry] for d in delays]
        assert min(column) >= full * 0.5 and max(column) <= full
        assert max(column) - min(column) > 0.3 * full  # jittered, not constant
    assert remote.RetryPolicy(jitter=0.0).delay(3) == 2.0


def test_retry_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("GEOSEG_RETRIES", "7")
    monkeypatch.setenv("GEOSEG_RETRY_DELAY", "0.25")
    assert remote.RetryPolicy.from_env() == remote.RetryPolicy(retries=7, base_delay=0.25)
    monkeypatch.setenv("GEOSEG_RETRIES", "many")
    with pytest.raises(
        SettingError, match=r"GEOSEG_RETRIES: received 'many'; expected a whole number >= 0"
    ):
        remote.RetryPolicy.from_env()


def test_retry_loop_sleeps_between_attempts_and_stops_at_permanent_errors():
    outcomes = [ConnectionResetError("reset"), TimeoutError("slow"), "done"]
    slept: list[float] = []

    def flaky_call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    policy = remote.RetryPolicy(retries=3, base_delay=1.0, jitter=0.0)
    assert (
        remote.call_with_retries(
            flaky_call, url="s3://b/k", storage_options={}, policy=policy, sleep=slept.append
        )
        == "done"
    )
    assert slept == [1.0, 2.0]
    calls = []

    def bad_data() -> None:
        calls.append(1)
        raise ValueError("corrupt chunk")

    with pytest.raises(ValueError, match="corrupt chunk"):
        remote.call_with_retries(
            bad_data, url="s3://b/k", storage_options={}, policy=policy, sleep=slept.append
        )
    assert calls == [1]


def _response_error(status: int, url: str = "http://h/x?sig=abc") -> aiohttp.ClientResponseError:
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": "Bearer TOKEN-123"}))
    info = aiohttp.RequestInfo(URL(url), "GET", headers, URL(url))
    return aiohttp.ClientResponseError(info, (), status=status, message="Service Unavailable")


def _s3_error(code: str, status: int) -> Exception:
    """The exception s3fs raises for an S3 error response (its own translation of botocore's)."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    response = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return translate_boto_error(ClientError(response, "GetObject"))


@pytest.mark.parametrize(
    ("make", "transient"),
    [
        (lambda: ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (lambda: TimeoutError("read timed out"), True),
        (lambda: _response_error(503), True),
        (lambda: _response_error(429), True),
        (lambda: _response_error(500), True),
        (lambda: _s3_error("SlowDown", 503), True),
        (lambda: _s3_error("InternalError", 500), True),
        (lambda: aiohttp.ServerDisconnectedError(), True),
        (lambda: _response_error(403), False),
        (lambda: _response_error(404), False),
        (lambda: _s3_error("AccessDenied", 403), False),
        (lambda: _s3_error("NoSuchKey", 404), False),
        (lambda: _s3_error("NoSuchBucket", 404), False),
        (lambda: FileNotFoundError("gone"), False),
        (lambda: ValueError("bad data"), False),
        (lambda: KeyError("band"), False),
        (lambda: StorageUnavailableError("already gave up"), False),
    ],
)
def test_transient_or_permanent(make, transient):
    assert remote.is_transient(make()) is transient


def test_causes_decide_for_wrappers():
    try:
        try:
            raise _response_error(503)
        except aiohttp.ClientResponseError as exc:
            raise FileNotFoundError("http://h/x") from exc  # what fsspec's HTTP info raises
    except FileNotFoundError as wrapped:
        assert remote.is_transient(wrapped)
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as exc:
            raise RuntimeError("read failed") from exc
    except RuntimeError as wrapped:
        assert remote.is_transient(wrapped)


def test_reasons_hide_signed_urls_headers_and_option_values():
    text = remote.reason(
        _response_error(503, "https://bucket.example.com/k.tif?X-Amz-Signature=abc")
    )
    assert text == "ClientResponseError: HTTP 503 Service Unavailable"
    refused = str(remote.translate(_response_error(403), "https://u:pw@h/x?sig=1", {}, "Reading"))
    assert "TOKEN-123" not in refused and "pw" not in refused
    assert "access denied" in refused and "s3:" not in refused and "headers" in refused
    leaky = OSError(f"failed with key={SECRET} at https://user:pw@host/path?token=t")
    shown = remote.reason(leaky, {"secret": SECRET, "client_kwargs": {"endpoint_url": "http://e"}})
    assert SECRET not in shown and "pw" not in shown and "token=t" not in shown
    assert "https://host/path" in shown


# --- S3: missing buckets and keys, refused access -------------------------------------------------


@pytest.fixture(scope="module")
def s3_cog(s3_server: dict, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("s3") / "scene.tif"
    image = textured_image(64, 64)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=3,
        dtype="uint8",
        crs=CRS,
        transform=TRANSFORM,
    ) as dst:
        dst.write(image)
    url = "s3://geoseg/errors/scene.tif"
    fsspec.filesystem("s3", skip_instance_cache=True, **s3_server).put(str(path), url)
    return url


@pytest.fixture(scope="module")
def reader_without_get(s3_server: dict) -> dict:
    """Storage options of an IAM user that may list the bucket but not get objects."""
    endpoint = s3_server["client_kwargs"]["endpoint_url"]
    kwargs = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": s3_server["key"],
        "aws_secret_access_key": s3_server["secret"],
    }
    iam = boto3.client("iam", **kwargs)
    iam.create_user(UserName="geoseg-no-get")
    key = iam.create_access_key(UserName="geoseg-no-get")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:PutObject"], "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*"},
        ],
    }
    iam.put_user_policy(
        UserName="geoseg-no-get", PolicyName="geoseg-no-get", PolicyDocument=json.dumps(policy)
    )
    return {
        "key": key["AccessKeyId"],
        "secret": key["SecretAccessKey"],
        "skip_instance_cache": True,
        "client_kwargs": dict(s3_server["client_kwargs"]),
    }


def assert_clean(exc: BaseException, *secrets: str) -> None:
    """The error names no secret, and chains no library exception that could."""
    for secret in secrets:
        assert secret not in str(exc) and secret not in repr(exc)
    assert exc.__cause__ is None


def test_missing_bucket_on_open(s3_server):
    with pytest.raises(
        BucketNotFoundError,
        match=r"Reading s3://no-such-bucket-1/scene\.tif failed: "
        r"the bucket 'no-such-bucket-1' does not exist",
    ) as info:
        geoseg.open_raster("s3://no-such-bucket-1/scene.tif", storage_options=s3_server)
    assert isinstance(info.value, FileNotFoundError)
    assert "endpoint" in str(info.value)
    assert_clean(info.value, SECRET)


def test_missing_key_on_open(s3_server, s3_cog):
    with pytest.raises(
        RasterNotFoundError, match=r"No raster at s3://geoseg/errors/nope\.tif"
    ) as info:
        geoseg.open_raster("s3://geoseg/errors/nope.tif", storage_options=s3_server)
    assert_clean(info.value, SECRET)


def test_access_denied_on_open(s3_server, s3_cog, reader_without_get):
    with enable_iam_authentication(), pytest.raises(StorageAccessError) as info:
        geoseg.open_raster(s3_cog, storage_options=reader_without_get)
    message = str(info.value)
    assert message.startswith("Reading s3://geoseg/errors/scene.tif failed: access denied")
    assert "s3:GetObject" in message and "credentials" in message
    assert isinstance(info.value, PermissionError)
    assert_clean(info.value, SECRET, reader_without_get["secret"])


def test_rejected_credentials_on_open(s3_server, s3_cog):
    """With IAM checks on, the fixture's made-up key is unknown to the server."""
    with (
        enable_iam_authentication(),
        pytest.raises(StorageAccessError, match="access denied") as info,
    ):
        geoseg.open_raster(s3_cog, storage_options={**s3_server, "skip_instance_cache": True})
    assert_clean(info.value, SECRET)


def test_output_on_a_missing_bucket_or_without_permission(
    s3_server, reader_without_get, tmp_path, model_path
):
    kwargs = {
        "shape": (16, 16),
        "chunks": (16, 16),
        "georef": GeoRef(),
        "class_names": ["a", "b"],
        "class_dtype": "uint8",
        "nodata_class": 255,
    }
    with pytest.raises(
        BucketNotFoundError, match=r"s3://no-such-bucket-2/out\.zarr failed: the bucket"
    ) as info:
        create_output("s3://no-such-bucket-2/out.zarr", storage_options=s3_server, **kwargs)
    assert_clean(info.value, SECRET)
    with (
        enable_iam_authentication(),
        pytest.raises(StorageAccessError, match="access denied") as info,
    ):
        create_output(
            "s3://geoseg/denied/out.zarr",
            storage_options={**s3_server, "skip_instance_cache": True},
            **kwargs,
        )
    assert "s3:PutObject" in str(info.value)
    assert_clean(info.value, SECRET)


def test_job_with_an_output_on_a_missing_bucket_fails_before_any_compute(
    s3_server, tmp_path, model_path
):
    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64))
    spec = JobSpec.from_dict(
        {
            "input": {"url": src},
            "model": {"path": model_path},
            "output": {"url": "s3://no-such-bucket-3/mask.zarr", "storage_options": s3_server},
        }
    )
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-3"):
        geoseg.jobs.run(spec, scheduler="tcp://127.0.0.1:9")  # unreachable: must fail before


def test_credentials_from_a_profile(s3_server, s3_cog, tmp_path, monkeypatch):
    """Keys in a shared credentials file, named by profile: no secret in the storage options."""
    endpoint = s3_server["client_kwargs"]["endpoint_url"]
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3_server["key"],
        aws_secret_access_key=s3_server["secret"],
    )
    iam.create_user(UserName="geoseg-profile-reader")
    key = iam.create_access_key(UserName="geoseg-profile-reader")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="geoseg-profile-reader", PolicyName="all", PolicyDocument=json.dumps(policy)
    )
    (tmp_path / "credentials").write_text(
        f"[geoseg-reader]\naws_access_key_id = {key['AccessKeyId']}\n"
        f"aws_secret_access_key = {key['SecretAccessKey']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    options = {
        "profile": "geoseg-reader",
        "skip_instance_cache": True,
        "client_kwargs": s3_server["client_kwargs"],
    }
    with enable_iam_authentication():
        raster = geoseg.open_raster(s3_cog, storage_options=options)
        np.testing.assert_array_equal(raster.values, textured_image(64, 64))
    assert key["SecretAccessKey"] not in repr(raster.encoding["geoseg_source"])


def test_http_zarr_job_downloads_each_chunk_about_once(served, http_root, tmp_path):
    """A job checks that its windows' chunks exist (absent chunks are an error by default). On
    HTTP that check must not start a download: fsspec's ``exists`` there is a GET, whose body
    the server sends until the client hangs up, so every chunk crossed about twice."""
    image = np.random.default_rng(3).integers(1, 255, size=(3, 1024, 1024), dtype=np.uint8)
    write_zarr(http_root / "noise.zarr", image, chunks=(256, 256))  # incompressible: stored ~ raw
    stored = sum(f.stat().st_size for f in (http_root / "noise.zarr").rglob("*") if f.is_file())
    spec = JobSpec.from_dict({
        "input": {"url": f"{served.url}/noise.zarr", "missing_chunks": "error"},
        "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
        "output": {"url": str(tmp_path / "mask.zarr"), "chunks": [512, 512]}})
    geoseg.jobs.run(spec)
    mask = zarr.open_group(str(tmp_path / "mask.zarr"), mode="r")["classes"][...]
    np.testing.assert_array_equal(mask, (image[0] > 128).astype(np.uint8))
    assert served.bytes_sent < 1.1 * stored, (served.bytes_sent, stored)


def test_http_zarr_job_refuses_an_absent_chunk(served, http_root, tmp_path):
    image = textured_image(512, 512, seed=4)
    write_zarr(http_root / "holed.zarr", image, chunks=(256, 256))
    chunk = next(p for p in (http_root / "holed.zarr").rglob("*") if p.is_file() and p.name == "1"
                 and p.parent.name == "1")
    chunk.unlink()
    spec = JobSpec.from_dict({
        "input": {"url": f"{served.url}/holed.zarr", "missing_chunks": "error"},
        "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
        "output": {"url": str(tmp_path / "mask.zarr"), "chunks": [256, 256]}})
    with pytest.raises(CorruptInputError, match="absent from the store"):
        geoseg.jobs.run(spec)


def test_http_chunk_check_raises_a_503_instead_of_calling_the_chunk_absent(served, http_root):
    from geoseg.io import missing

    write_zarr(http_root / "busy.zarr", textured_image(64, 64, seed=6), chunks=(64, 64))
    array = zarr.open_array(f"{served.url}/busy.zarr", mode="r")
    served.fail_next = 2  # the HEAD and fsspec's GET after it
    with pytest.raises(FileNotFoundError) as caught:
        missing.absent(array, ["c/0/0/0"])
    assert remote.is_transient(caught.value)  # retried by the read around the check
    assert missing.absent(array, ["c/0/0/0"]) == []  # the server is back: the chunk is there


# --- storage options with a local path --------------------------------------------------------

LOCAL_OPTIONS = {"anon": True, "key": SECRET}  # what a spec shared with remote runs may carry


def test_storage_options_for_a_local_zarr_input_are_ignored_with_a_warning(tmp_path, caplog):
    """zarr refuses storage options with a local path; that refusal read as a corrupt input."""
    image = textured_image(32, 32)
    url = write_zarr(tmp_path / "in.zarr", image)
    with caplog.at_level("WARNING", logger="geoseg.io"):
        raster = geoseg.open_raster(url, LOCAL_OPTIONS)
    np.testing.assert_array_equal(raster.values, image)
    assert (f"input {url} is a local path, so its storage_options are ignored: they apply to "
            "remote URLs only") in caplog.text
    assert SECRET not in caplog.text


def test_storage_options_for_a_local_output_are_ignored_with_a_warning(tmp_path, caplog):
    url = str(tmp_path / "out.zarr")
    options = {"shape": (20, 30), "chunks": (10, 10), "georef": GeoRef(), "class_names": ["a", "b"],
               "class_dtype": "uint8", "nodata_class": 255, "storage_options": LOCAL_OPTIONS}
    with caplog.at_level("WARNING", logger="geoseg.io"):
        target = create_output(url, **options)
    target.write("classes", (slice(0, 10), slice(0, 10)), np.ones((10, 10), np.uint8))
    assert f"output {url} is a local path, so its storage_options are ignored" in caplog.text
    create_output(url, overwrite=True, **options)  # known as geoseg's own, so replaced


def test_a_signed_http_url_is_one_raster_not_a_glob(served, big_tif):
    """A '?' in an http(s) URL starts its query (a signature), not a glob: the URL was globbed,
    matched itself and was opened as a glob again, forever."""
    url = f"{served.url}/big.tif?X-Amz-Signature=SIGSECRET123&X-Amz-Expires=60"
    raster = geoseg.open_raster(url, chunks=256)
    np.testing.assert_array_equal(raster[:, :256, :256].values, big_tif[:, :256, :256])
    source = raster.encoding["geoseg_source"]  # its repr reaches logs: a failed task's arguments
    assert source.url == url and "SIGSECRET123" not in repr(source) and "/big.tif" in repr(source)
    assert "SIGSECRET123" not in repr(geoseg.open_raster([url, url]).encoding["geoseg_source"])


@pytest.fixture
def no_credentials(monkeypatch, tmp_path) -> None:
    """No AWS credentials anywhere botocore looks."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fsspec.filesystem("s3").clear_instance_cache()


def test_missing_s3_credentials_are_an_access_error_naming_what_to_check(s3_server, no_credentials):
    """botocore's NoCredentialsError was an internal error (exit 1), naming nothing to check."""
    options = {"client_kwargs": s3_server["client_kwargs"]}  # the endpoint, no key or secret
    with pytest.raises(StorageAccessError) as read:
        geoseg.open_raster("s3://geoseg/in.tif", options)
    with pytest.raises(StorageAccessError) as write:
        create_output("s3://geoseg/out.zarr", shape=(20, 30), chunks=(10, 10), georef=GeoRef(),
                      class_names=["a", "b"], class_dtype="uint8", nodata_class=255,
                      storage_options=options)
    with pytest.raises(StorageAccessError) as versioned:  # was called corrupt, its metadata
        geoseg.open_raster("s3://geoseg/in.zarr?versionId=3", options)  # read by zarr's store
    for caught, what in ((read, "Reading s3://geoseg/in.tif"), (write, "s3://geoseg/out.zarr"),
                         (versioned, "s3://geoseg/in.zarr")):
        said = str(caught.value)
        assert what in said and "no credentials were found" in said, said
        assert "AWS_ACCESS_KEY_ID" in said and "anon: true" in said


# --- S3: a session token the store refuses, storage options botocore refuses ------------------

BOGUS_TOKEN = "BOGUS-SESSION-TOKEN-456"


@pytest.fixture(scope="module")
def iam_reader(s3_server: dict) -> dict:
    """Storage options of an IAM user that may do anything with S3 (valid key and secret)."""
    client = dict(s3_server["client_kwargs"])
    iam = boto3.client("iam", **client, aws_access_key_id=s3_server["key"],
                       aws_secret_access_key=s3_server["secret"])
    iam.create_user(UserName="geoseg-token-reader")
    key = iam.create_access_key(UserName="geoseg-token-reader")["AccessKey"]
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="geoseg-token-reader", PolicyName="all",
                        PolicyDocument=json.dumps(policy))
    return {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"],
            "skip_instance_cache": True, "client_kwargs": client}


@pytest.mark.parametrize("given", ["storage_options", "environment"])
def test_a_bogus_session_token_is_a_bad_request_naming_the_token(
        s3_cog, iam_reader, given, monkeypatch):
    """With a session token that is not its own (or expired), S3 answers the HEAD with HTTP 400
    and no body; s3fs makes that ``OSError(EINVAL, "Bad Request")``: an internal error (exit 1)."""
    options = {**iam_reader, "token": BOGUS_TOKEN}
    if given == "environment":
        options = {"client_kwargs": iam_reader["client_kwargs"], "skip_instance_cache": True}
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_reader["key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_reader["secret"])
        monkeypatch.setenv("AWS_SESSION_TOKEN", BOGUS_TOKEN)
    with enable_iam_authentication():
        geoseg.open_raster(s3_cog, storage_options=iam_reader)  # the key and secret are valid
        with pytest.raises(StorageAccessError) as info:
            geoseg.open_raster(s3_cog, storage_options=options)
    message = str(info.value)
    assert message.startswith(f"Reading {s3_cog} failed: the store refused the request as bad "
                              "(HTTP 400"), message
    assert "session token" in message and "AWS_SESSION_TOKEN" in message, message
    assert "endpoint" in message and "region" in message, message
    assert not remote.is_transient(info.value)
    assert_clean(info.value, SECRET, iam_reader["secret"], BOGUS_TOKEN)


@pytest.fixture
def no_aws_files(monkeypatch, tmp_path) -> None:
    """No AWS profile anywhere botocore looks, so none can be found by name."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


OPTION_FAULTS = {  # storage options botocore refuses, and what the error must name
    "profile": ({"profile": "nosuchprofile"},
                "The profile 'nosuchprofile' (storage_options profile) is in none of the AWS"),
    "config_kwargs": ({"config_kwargs": {"bogus": 1}}, "Got unexpected keyword argument 'bogus'"),
}


@pytest.mark.parametrize("fault", sorted(OPTION_FAULTS))
def test_storage_options_botocore_refuses_are_named_not_called_a_corrupt_file(
        s3_server, s3_cog, no_aws_files, fault):
    """An unknown profile (ProfileNotFound) or config_kwargs key (TypeError) was reported as a
    corrupt input file, on reads; on writes as whatever came of it."""
    extra, named = OPTION_FAULTS[fault]
    options = {**s3_server, **extra, "skip_instance_cache": True}
    with pytest.raises(ParameterError) as read:
        geoseg.open_raster(s3_cog, storage_options=options)
    with pytest.raises(ParameterError) as write:
        create_output("s3://geoseg/options/out.zarr", shape=(20, 30), chunks=(10, 10),
                      georef=GeoRef(), class_names=["a", "b"], class_dtype="uint8",
                      nodata_class=255, storage_options=options)
    for caught in (read, write):
        message = str(caught.value)
        assert "failed: its storage options could not make an S3 client" in message, message
        assert named in message and "corrupt" not in message, message
        assert_clean(caught.value, SECRET)
    assert str(read.value).startswith(f"Reading {s3_cog} failed")


@pytest.mark.parametrize("fault", ["token", *sorted(OPTION_FAULTS)])
def test_validate_reports_storage_option_faults_as_bad_input(
        s3_cog, iam_reader, no_aws_files, tmp_path, fault):
    """``geoseg validate`` on a spec with these storage options: exit 2 and what to fix, not an
    internal error (exit 1) nor a corrupt file."""
    from tests.cli import geoseg as command

    extra, named = OPTION_FAULTS.get(fault, ({"token": BOGUS_TOKEN}, "(HTTP 400"))
    spec = {"input": {"url": s3_cog, "storage_options": {**iam_reader, **extra}},
            "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
            "output": {"url": str(tmp_path / "out.zarr")}}
    (tmp_path / "job.yaml").write_text(json.dumps(spec))
    with enable_iam_authentication():
        result = command("validate", str(tmp_path / "job.yaml"))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"error: input.url: Reading {s3_cog} failed: " in output and named in output, output
    assert "internal error" not in output and "corrupt" not in output, output
    for secret in (iam_reader["secret"], BOGUS_TOKEN):
        assert secret not in output, output


def test_a_store_whose_package_is_not_installed_is_named_with_how_to_install_it():
    """fsspec's ImportError came out as an internal error with a traceback."""
    from importlib.util import find_spec

    from tests.cli import geoseg as cli

    if find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    result = cli("info", "gs://bucket/scene.tif")
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "internal error" not in said, said
    assert "Reading gs://bucket/scene.tif failed: Please install gcsfs" in said
    assert "pip install gcsfs" in said


@pytest.mark.parametrize("command", ["eval", "quicklook", "status", "export"])
def test_an_output_on_a_server_refusing_connections_is_named_not_an_internal_error(tmp_path,
                                                                                  command):
    """Not "no geoseg output there" either: fsspec's HTTP ``exists`` reads a refused
    connection as a missing file."""
    from tests.cli import geoseg as cli
    from tests.ports import free_port

    url = f"http://127.0.0.1:{free_port()}/out.zarr"  # nothing listens there
    rest = {"eval": [url], "quicklook": [str(tmp_path / "look.png")], "status": [],
            "export": ["--cog", str(tmp_path / "mask.tif")]}[command]
    result = cli(command, url, *rest)
    said = " ".join(result.stderr.split())
    assert result.returncode != 0 and "internal error" not in said, said
    assert f"{url} failed: the storage server at 127.0.0.1:" in said
    assert "refused the connection" in said and "No geoseg output" not in said


def test_status_still_finds_an_output_served_over_http(served, http_root):
    """Asking for the group's ``zarr.json`` first (strictly, so that a refused connection is
    named) still finds an output a server lists."""
    from geoseg.jobs import JobSpec, run
    from tests.cli import geoseg as cli

    folder = http_root / "listed"
    write_zarr(folder / "in.zarr", textured_image(64, 64, bands=1, seed=2), chunks=(32, 32))
    run(JobSpec.from_dict({"input": {"url": str(folder / "in.zarr")},
                           "model": {"method": "threshold", "params": {"thresholds": [128]}},
                           "output": {"url": str(folder / "out.zarr"), "chunks": [32, 32]}}),
        scheduler="threads")
    result = cli("status", f"{served.url}/listed/out.zarr")
    said = " ".join(result.stdout.split()) + " ".join(result.stderr.split())
    assert result.returncode == 0, said
    assert "No geoseg output" not in said and "complete, 4/4 task regions done" in said, said


def test_user_info_beside_an_authorization_header_is_named_not_called_corrupt(served, http_root):
    """aiohttp refuses both at once ("Cannot combine AUTHORIZATION header ..."): the metadata
    was said to be corrupt or truncated."""
    write_zarr(http_root / "auth.zarr", textured_image(32, 32), chunks=(16, 16))
    url = served.url.replace("http://", "http://user:PASSW0RD@") + "/auth.zarr"
    with pytest.raises(geoseg.errors.ParameterError) as info:
        geoseg.open_raster(url, {"headers": {"Authorization": "Bearer HDRTOKEN"}})
    said = str(info.value)
    expected = ("the URL carries credentials (user info) and its storage options an "
                "Authorization header")
    assert expected in said, said
    assert "PASSW0RD" not in said and "HDRTOKEN" not in said and "corrupt" not in said
