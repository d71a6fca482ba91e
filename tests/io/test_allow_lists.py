"""Allow-lists (geoseg.io.allow) on real files: a "GeoTIFF" that is really a VRT naming local
files or URLs is refused, never followed (a loopback HTTP server in its own process counts the
requests, and gets none); output URLs climbing out with '..', on schemes or buckets outside the
allow-lists are refused before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import rasterio
import rasterio.shutil
import yaml

import geoseg
from geoseg.errors import JobSpecError, OutputLocationError, UnsupportedFormatError
from geoseg.io.convert import convert
from geoseg.io.exports.common import refuse_existing
from geoseg.io.georef import GeoRef
from geoseg.io.output import create_output
from geoseg.jobs.spec import JobSpec
from tests.cli import geoseg as geoseg_here
from tests.conftest import job_dict, textured_image, write_geotiff

QUICK = {"COLUMNS": "1000"}
# a web server in its own process (GDAL holds the GIL while it fetches): one line per request
SERVER = """
import http.server, sys
log = open(sys.argv[1], "a", buffering=1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(self.command + " " + self.path + "\\n")
        self.send_response(404)
        self.end_headers()
    do_HEAD = do_GET
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture()
def web(tmp_path):
    """``(port, requests)``: a loopback HTTP server answering 404 and the requests it received."""
    log = tmp_path / "requests.log"
    log.touch()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(log)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield port, lambda: log.read_text().split("\n")[:-1]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def geoseg_cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """The command in a process of its own, for a test that searches all it prints for a
    secret; the others run it here (``tests.cli.geoseg``)."""
    return subprocess.run([sys.executable, "-m", "geoseg.cli", *args], check=False, capture_output=True,
                          text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **QUICK, "PYTHONPATH": str(Path(__file__).parents[2]), **env})


def assert_clean(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and "internal error" not in output, output
    said = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in said, output


def write_vrt(tmp_path: Path, name: str, source: str | None = None) -> Path:
    """A real VRT (written by GDAL) over a real GeoTIFF, saved as ``name``; with ``source``, its
    bands read that file or URL instead."""
    real = write_geotiff(tmp_path / "real.tif", textured_image(130, 120))
    vrt = tmp_path / "made.vrt"
    rasterio.shutil.copy(real, str(vrt), driver="VRT")
    text = vrt.read_text()
    assert '<SourceFilename relativeToVRT="1">real.tif</SourceFilename>' in text
    if source is not None:
        text = text.replace('<SourceFilename relativeToVRT="1">real.tif',
                            f'<SourceFilename relativeToVRT="0">{source}')
    (tmp_path / name).write_text(text)
    return tmp_path / name


def url_vrt(tmp_path: Path, port: int, name: str = "x.tif") -> Path:
    return write_vrt(tmp_path, name, f"/vsicurl/http://127.0.0.1:{port}/secret-scene.tif")


# --- inputs: GDAL drivers ------------------------------------------------------------------------


def vrt_for(tmp_path: Path, points_at: str, port: int) -> Path:
    vrt = write_vrt(tmp_path, "x.tif") if points_at == "a local file" else url_vrt(tmp_path, port)
    with rasterio.open(vrt) as ds:  # GDAL itself takes it for a raster, whatever its name
        assert ds.driver == "VRT"
    return vrt


@pytest.mark.timeout(60)
@pytest.mark.parametrize("points_at", ["a local file", "a URL"])
def test_a_vrt_named_tif_is_refused_when_opened(tmp_path, web, points_at):
    port, requests = web
    vrt = vrt_for(tmp_path, points_at, port)
    with pytest.raises(UnsupportedFormatError) as caught:
        geoseg.open_raster(str(vrt))
    message = str(caught.value)
    assert f"Cannot read {vrt}" in message and "GDAL driver VRT" in message, message
    assert "drivers GTiff only" in message, message
    assert requests() == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("points_at", "command"), [("a local file", "validate"), ("a URL", "run")])
def test_a_vrt_named_tif_is_one_clean_error_of_the_command(tmp_path, model_path, web, points_at,
                                                           command):
    port, requests = web
    vrt = vrt_for(tmp_path, points_at, port)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(str(vrt), model_path, str(tmp_path / "out.zarr"))))
    result = geoseg_here(command, str(job), env=QUICK)
    assert_clean(result, 2, f"Cannot read {vrt}", "GDAL driver VRT", "drivers GTiff only")
    assert not (tmp_path / "out.zarr").exists()
    assert requests() == []


@pytest.mark.timeout(60)
def test_workers_open_only_geotiffs_even_if_the_file_is_swapped_after_planning(tmp_path, web):
    """The allow-list holds where GDAL opens the file, not only where geoseg sniffs it: a file
    replaced by a VRT between planning and reading is refused by the task that reads it."""
    port, requests = web
    tif = Path(write_geotiff(tmp_path / "scene.tif", textured_image(130, 120)))
    raster = geoseg.open_raster(str(tif))
    source = raster.encoding["geoseg_source"]
    url_vrt(tmp_path, port, "swapped.tif").replace(tif)
    with pytest.raises(UnsupportedFormatError) as caught:
        source.read((slice(0, 64), slice(0, 64)))
    message = str(caught.value)
    assert f"Cannot read {tif}" in message and "GDAL driver VRT" in message, message
    assert "input window y 0:64, x 0:64" in message and "drivers GTiff only" in message, message
    assert requests() == []


@pytest.mark.timeout(60)
def test_a_vrt_overview_sidecar_beside_a_real_geotiff_is_not_followed(tmp_path, web):
    """GDAL opens ``scene.tif.ovr`` with any driver whatever the allowed ones: geoseg looks for no
    sidecar file, so the overview levels are the file's own (none here)."""
    port, requests = web
    tif = write_geotiff(tmp_path / "scene.tif", textured_image(130, 120))
    ovr = url_vrt(tmp_path, port, "scene.tif.ovr")
    ovr.write_text(ovr.read_text().replace('rasterXSize="120" rasterYSize="130"',
                                           'rasterXSize="60" rasterYSize="65"'))
    full = geoseg.open_raster(tif)
    assert full.shape == (3, 130, 120)
    assert int(full[:, :64, :64].sum().compute()) > 0
    with pytest.raises(UnsupportedFormatError, match="has 0 overview"):
        geoseg.open_raster(tif, level=1)
    assert requests() == []


# --- outputs -------------------------------------------------------------------------------------

BAD_OUTPUTS = {"../x.zarr": "'..' segment", "out/../../x.zarr": "'..' segment",
               "ftp://127.0.0.1:9/x.zarr": "received scheme ftp://"}


@pytest.mark.parametrize("url", list(BAD_OUTPUTS))
def test_bad_output_urls_are_refused_when_the_spec_is_read(tmp_path, model_path, url):
    with pytest.raises(JobSpecError) as caught:
        JobSpec.from_dict(job_dict(str(tmp_path / "in.tif"), model_path, url))
    assert "output.url" in str(caught.value) and BAD_OUTPUTS[url] in str(caught.value)


@pytest.mark.parametrize("url", list(BAD_OUTPUTS))
def test_bad_output_urls_are_refused_where_the_output_is_created(tmp_path, monkeypatch, url):
    """The second line: code that creates an output without a job spec."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(OutputLocationError, match=BAD_OUTPUTS[url].replace("'", ".")):
        create_output(url, shape=(1, 64, 64), chunks=(32, 32), georef=GeoRef(), class_names=["a", "b"],
                      class_dtype="uint8", nodata_class=255)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]


@pytest.mark.parametrize("url", list(BAD_OUTPUTS))
def test_convert_and_exports_refuse_bad_destinations(tmp_path, monkeypatch, url):
    tif = write_geotiff(tmp_path / "in.tif", textured_image(64, 64))
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(OutputLocationError, match=BAD_OUTPUTS[url].replace("'", ".")):
        convert(tif, url)
    with pytest.raises(OutputLocationError, match=BAD_OUTPUTS[url].replace("'", ".")):
        refuse_existing(url.replace(".zarr", ".tif"), None, False, "COG")  # what every export checks
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "in.tif"]


@pytest.mark.timeout(120)
def test_run_refuses_a_climbing_output_before_writing_anything(tmp_path, model_path):
    """A relative path in a spec file means the same place wherever geoseg runs: it is joined to
    the spec's folder and normalised first. An absolute path or a URL keeps its '..' as given."""
    tif = write_geotiff(tmp_path / "in.tif", textured_image(64, 64))
    work = tmp_path / "work"
    work.mkdir()
    climbing = f"{work}/out/../../x.zarr"
    (work / "job.yaml").write_text(yaml.safe_dump(job_dict(tif, model_path, climbing)))
    result = geoseg_here("run", "job.yaml", cwd=work, env=QUICK)
    assert_clean(result, 2, "output.url", climbing, "'..' segment")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "work"]
    assert sorted(p.name for p in work.iterdir()) == ["job.yaml"]


def test_a_climbing_object_store_url_is_refused(tmp_path, model_path):
    for url in ("s3://geoseg/jobs/../other/x.zarr", "s3://geoseg/jobs/%2e%2e/x.zarr", "gs://b/a/..\\x.zarr"):
        with pytest.raises(JobSpecError, match="'..' segment"):
            JobSpec.from_dict(job_dict(str(tmp_path / "in.tif"), model_path, url))


@pytest.mark.timeout(120)
def test_a_bucket_outside_the_allow_list_is_refused_before_any_write(tmp_path, model_path, s3_server,
                                                                     monkeypatch):
    endpoint = s3_server["client_kwargs"]["endpoint_url"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=s3_server["key"], aws_secret_access_key=s3_server["secret"])
    s3.create_bucket(Bucket="not-allowed-bucket")
    tif = write_geotiff(tmp_path / "in.tif", textured_image(64, 64))
    data = job_dict(tif, model_path, "s3://not-allowed-bucket/out.zarr")
    data["output"]["storage_options"] = s3_server
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(data))
    result = geoseg_cli("run", str(job), GEOSEG_OUTPUT_BUCKETS="geoseg,team-*")
    assert_clean(result, 2, "received bucket 'not-allowed-bucket'", "GEOSEG_OUTPUT_BUCKETS")
    assert s3_server["secret"] not in result.stdout + result.stderr
    assert "Contents" not in s3.list_objects_v2(Bucket="not-allowed-bucket")
    monkeypatch.setenv("GEOSEG_OUTPUT_BUCKETS", "geoseg,team-*")
    for allowed in ("s3://geoseg/out.zarr", "s3://team-a/out.zarr"):  # the listed ones pass
        JobSpec.from_dict(job_dict(tif, model_path, allowed))
    with pytest.raises(OutputLocationError, match="received bucket 'not-allowed-bucket'"):
        create_output("s3://not-allowed-bucket/out.zarr", shape=(1, 64, 64), chunks=(32, 32),
                      georef=GeoRef(), class_names=["a", "b"], class_dtype="uint8", nodata_class=255,
                      storage_options=s3_server)
    assert "Contents" not in s3.list_objects_v2(Bucket="not-allowed-bucket")


def test_default_schemes_keep_local_and_object_store_outputs(tmp_path, model_path):
    for url in (str(tmp_path / "out.zarr"), "out.zarr", "s3://bucket/a/out.zarr", "memory://x/out.zarr",
                "gs://bucket/out.zarr", f"file://{tmp_path}/out.zarr"):
        JobSpec.from_dict(job_dict(str(tmp_path / "in.tif"), model_path, url))
