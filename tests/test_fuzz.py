"""Hostile inputs to the three parsers a user's files reach first, by Hypothesis: the job-spec
parser (random YAML, mutations of a valid spec, random bytes), the model-file header parser
(mutated safetensors headers and metadata, truncated files) and the tiling plan (any shapes,
chunks, tiles, halos: zeros, negatives, huge values). Nothing may escape but geoseg's own
documented errors (:class:`~geoseg.errors.GeosegError` subclasses)."""

from __future__ import annotations

import copy
import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.core import spec as core_spec
from geoseg.errors import GeosegError, JobSpecError
from geoseg.jobs.spec import JobSpec, load_job
from geoseg.models.modelfile import read_header
from geoseg.tiling.plan import (
    Tiling,
    inference_cost,
    n_regions,
    read_window,
    region_tiles,
    regions,
    task_region,
)

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_N", 150)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- values ------------------------------------------------------------------------------

HUGE = st.sampled_from([2**31, 2**63, 10**30, -(2**63)])
NUMBERS = st.one_of(st.integers(-5, 300), HUGE, st.floats(allow_nan=True, allow_infinity=True))
TEXT = st.text(max_size=12) | st.sampled_from(["", "..", "s3://", "http://x/y", "a" * 300, "1:2:3",
                                               "01:30:00", "64GiB", "5m", "/etc/passwd"])
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TEXT | st.integers(-2, 2), inner, max_size=4), max_leaves=12)


def valid_spec() -> dict[str, Any]:
    return {
        "name": "fuzz",
        "input": {"url": "in.zarr", "bands": [1, 2, 3], "level": 0, "storage_options": {"anon": True}},
        "model": {"ensemble": {"members": [{"path": "m.safetensors"},
                                           {"method": "otsu", "params": {"feature": 1}}],
                               "weights": [1.0, 2.0]}, "tta": "flips"},
        "output": {"url": "out.zarr", "chunks": [64, 64], "shards": [128, 128], "nodata_class": 255},
        "inference": {"tile": 64, "halo": 8, "blend": "gaussian", "overlap": 0.25},
        "cluster": {"kind": "slurm", "n_workers": 2,
                    "jobqueue": {"walltime": "01:00:00", "memory": "8GiB", "lifetime_margin": "5m"}},
        "evaluate": {"reference": {"url": "ref.zarr"}, "ignore": [0]},
        "instances": {"method": "watershed", "classes": ["a", 1], "h": 2.0},
        "tracking": {"mlflow": {"experiment": "x"}},
    }


def paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in nested dicts and lists, as a path of keys and indexes."""
    found = [prefix]
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found += paths(value, (*prefix, key))
    return found


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    """A valid spec with a few places replaced by random values, or deleted."""
    spec = valid_spec()
    for _ in range(draw(st.integers(1, 4))):
        places = paths(spec)
        place = draw(st.sampled_from(places))
        if not place:
            return draw(VALUES)
        parent = spec
        for key in place[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()) and len(place) > 1:
            parent.pop(place[-1], None)
        else:
            parent[place[-1]] = draw(VALUES)
    return spec


def only_geoseg_errors(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``; a non-geoseg exception fails the test with its type."""
    try:
        return call(*args, **kwargs)
    except GeosegError:
        return None


# --- the job spec ------------------------------------------------------------------------


@FUZZ
@given(mutated_specs())
def test_a_mutated_spec_validates_or_raises_a_job_spec_error(data):
    only_geoseg_errors(JobSpec.from_dict, copy.deepcopy(data))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        only_geoseg_errors(load_job, path)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_random_bytes_as_a_job_spec(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.yaml"
        path.write_bytes(raw)
        only_geoseg_errors(load_job, path)


YAML_TEXT = st.lists(st.sampled_from(
    ["input:", "  url: x", "model: {path: m}", "output: {url: o}", "- a", "? b", "&a x", "*a",
     "!!python/object:os.system x", "!!binary aGk=", "{", "]", "'", '"', "key: [1, 2", "\t", "---",
     "...", "%YAML 1.1", "a: !!float nan", "2001-12-14", "x: 0x1f", "<<: *a", "~", "\x00"]),
    max_size=8).map("\n".join)


@FUZZ
@given(YAML_TEXT)
def test_random_yaml_documents(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.yaml"
        path.write_text(text)
        only_geoseg_errors(load_job, path)


def alias_chain(width: int, levels: int) -> tuple[str, int]:
    """A mapping of ``levels`` anchors, each a list of ``width`` aliases of the one before (the
    first: of ``width`` scalars), and how many values it holds once its aliases are expanded."""
    lines, size = [f"a0: &a0 [{', '.join(['x'] * width)}]"], 1 + width
    total = 1 + 1 + size  # the mapping, then each key and its list
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
        size = 1 + width * size
        total += 1 + size
    return "\n".join(lines), total


@FUZZ
@given(st.integers(1, 12), st.integers(1, 10), st.integers(50, 5000))
def test_aliases_are_measured_without_being_expanded(width, levels, limit):
    text, total = alias_chain(width, levels)
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(core_spec, "MAX_VALUES", limit):
        path = Path(folder) / "spec.yaml"
        path.write_text(text)
        if total > limit:
            with pytest.raises(JobSpecError, match=f"received YAML of {total:,} values"):
                core_spec.load_yaml(path, "spec", JobSpecError)
        else:
            assert core_spec.load_yaml(path, "spec", JobSpecError) == yaml.safe_load(text)


@FUZZ
@given(VALUES)
def test_shared_values_read_as_safe_load_reads_them(value):
    text = yaml.safe_dump({"once": value, "again": [value, value]})  # anchors and aliases
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(text)
        assert repr(core_spec.load_yaml(path, "spec", JobSpecError)) == repr(yaml.safe_load(text))


PLAIN_KEYS = st.from_regex(r"[a-z_]{1,8}", fullmatch=True).filter(lambda k: yaml.safe_load(k) == k)


@FUZZ
@given(st.lists(PLAIN_KEYS, min_size=1, max_size=6, unique=True), st.data())
def test_a_key_given_twice_is_refused_wherever_it_is(keys, data):
    again = data.draw(st.sampled_from(keys))
    lines = [f"{key}: {i}" for i, key in enumerate(keys)]
    lines.insert(data.draw(st.integers(0, len(lines))), f"{again}: again")
    first, second = (i + 1 for i, line in enumerate(lines) if line.split(":")[0] == again)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text("\n".join(lines))
        with pytest.raises(JobSpecError, match=rf"line {second}, column 1: received the key "
                                               rf"'{again}' a second time \(first on line {first}\)"):
            core_spec.load_yaml(path, "spec", JobSpecError)


# --- model file headers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bytes(model_path) -> bytes:
    return Path(model_path).read_bytes()


def split(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def joined(header: Any, body: bytes) -> bytes:
    text = json.dumps(header, allow_nan=True).encode()
    return struct.pack("<Q", len(text)) + text + body


def read_bytes_as_model(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        path.write_bytes(data)
        only_geoseg_errors(read_header, str(path))


@FUZZ
@given(st.data())
def test_mutated_model_metadata(model_bytes, data):
    header, body = split(model_bytes)
    meta = json.loads(header["__metadata__"]["model"])
    for _ in range(data.draw(st.integers(1, 3))):
        place = data.draw(st.sampled_from([p for p in paths(meta) if p]))
        parent = meta
        for key in place[:-1]:
            parent = parent[key]
        parent[place[-1]] = data.draw(VALUES)
    header["__metadata__"]["model"] = json.dumps(meta, allow_nan=True)
    read_bytes_as_model(joined(header, body))


@FUZZ
@given(st.data())
def test_mutated_safetensors_header(model_bytes, data):
    header, body = split(model_bytes)
    place = data.draw(st.sampled_from(paths(header)))
    if not place:
        header = data.draw(VALUES)
    else:
        parent = header
        for key in place[:-1]:
            parent = parent[key]
        parent[place[-1]] = data.draw(VALUES)
    read_bytes_as_model(joined(header, body))


@FUZZ
@given(st.data())
def test_truncated_or_corrupted_model_files(model_bytes, data):
    raw = bytearray(model_bytes[: data.draw(st.integers(0, len(model_bytes)))])
    for _ in range(data.draw(st.integers(0, 3))):
        if raw:
            raw[data.draw(st.integers(0, min(len(raw), 600) - 1))] = data.draw(st.integers(0, 255))
    read_bytes_as_model(bytes(raw))


@FUZZ
@given(st.binary(max_size=64), st.integers(0, 2**64 - 1))
def test_random_model_files(raw, length):
    read_bytes_as_model(raw)
    read_bytes_as_model(struct.pack("<Q", length) + raw)


# --- the tiling plan ----------------------------------------------------------------------

SIZES = st.integers(-3, 70) | HUGE | st.sampled_from([0, 1, 2**40])
PER_AXIS = SIZES | st.lists(SIZES, min_size=0, max_size=4)


@FUZZ
@given(st.lists(SIZES, min_size=0, max_size=4), PER_AXIS, PER_AXIS, PER_AXIS,
       st.sampled_from(["crop", "gaussian", "linear", "nope"]),
       st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 0.5, 0.99]))
def test_any_tiling_parameters(shape, tile, halo, stride, blend, overlap):
    spec = only_geoseg_errors(Tiling.create, shape, tile=tile, halo=halo, stride=stride,
                              blend=blend, overlap=overlap)
    if spec is None or math.prod(spec.shape) > 10**6:
        return  # what is planned below is bounded by the budgets in a job
    for region in list(regions(spec.shape, spec.tile))[:4]:
        tiles = region_tiles(spec, region)
        assert tiles and read_window(tiles)
    only_geoseg_errors(task_region, spec, spec.tile, max_pixels=10**6)
    only_geoseg_errors(inference_cost, spec, spec.tile)


@FUZZ
@given(st.lists(SIZES, min_size=0, max_size=4), st.lists(SIZES, min_size=0, max_size=4))
def test_any_chunk_grid(shape, chunks):
    count = only_geoseg_errors(n_regions, shape, chunks)
    grid = only_geoseg_errors(regions, shape, chunks)
    if grid is not None and count is not None and count <= 1000:
        assert len(list(grid)) == max(count, 0) or min(shape, default=1) <= 0


# --- what the fuzzing found, kept as plain cases ------------------------------------------


@pytest.mark.parametrize("place, value", [
    (("__metadata__",), None),  # AttributeError from the metadata parser
    (("encoders.0.1.running_var", "shape"), [1.3407807929942597e154] * 2),  # OverflowError in a message
])
def test_header_mutations_hypothesis_found(model_bytes, place, value):
    header, body = split(model_bytes)
    parent = header
    for key in place[:-1]:
        parent = parent[key]
    parent[place[-1]] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        path.write_bytes(joined(header, body))
        with pytest.raises(GeosegError):
            read_header(str(path))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("call", [
    lambda: Tiling.create((64, 64), tile=64, halo=0, stride=0),  # ZeroDivisionError
    lambda: Tiling.create((64, 64), tile=64.5, halo=0),  # TypeError
    lambda: Tiling.create((64, 64), tile="64", halo=0),  # per character
    lambda: Tiling.create((64, 64), tile=64, halo=0, overlap="half"),  # ValueError
    lambda: Tiling.create((), tile=64, halo=0),  # a plan of no axes
    lambda: n_regions((64, 64), (0, 64)),  # ZeroDivisionError
    lambda: regions((64,), (64, 64)),
    lambda: n_regions((64, -1), (64, 64)),
])
def test_plan_inputs_hypothesis_found(call):
    with pytest.raises(GeosegError):
        call()


@pytest.mark.timeout(30)
def test_a_huge_chunk_grid_is_walked_lazily():
    """regions() built every axis's list first, and itertools.product copied each range: a grid
    of 2**63 chunks filled memory before the first one came."""
    assert list(regions((2**63, 0), (1, 1))) == []
    assert next(regions((2**63, 2**63), (1, 1))) == (slice(0, 1), slice(0, 1))
