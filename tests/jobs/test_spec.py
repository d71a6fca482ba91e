"""Job specs: precise errors for every problem, secrets never echoed."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from geoseg.errors import JobSpecError
from geoseg.jobs import JobSpec, load_job


def write(tmp_path, data) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_valid_spec_gets_defaults(tmp_path):
    spec = load_job(write(tmp_path, {"input": {"url": "a.zarr"}, "model": {"path": "builtin:demo-unet"},
                                     "output": {"url": "o.zarr"}}))
    assert spec.output.chunks is None and spec.cluster.scheduler is None  # per raster: geoseg.tiling.DEFAULT_CHUNK
    with pytest.raises(pydantic.ValidationError):
        spec.output.url = "x"  # frozen


def test_every_problem_is_named_with_key_received_and_allowed(tmp_path):
    with pytest.raises(JobSpecError) as err:
        load_job(write(tmp_path, {"input": {"url": "a", "urll": 1}, "model": {},
                                  "output": {"url": "o", "chunks": ["big", 2]}, "inferance": {}}))
    text = str(err.value)
    assert "4 problem(s)" in text
    assert "input.urll: unknown key; allowed keys here: url, variable, bands, level, storage_options" in text
    assert ("model: received {} (dict); expected exactly one of path (a model file), method (a classical "
            "method) or ensemble (members)") in text
    assert "output.chunks.0: received 'big' (str); expected a valid integer" in text
    assert "output.chunks: both chunk sizes must be >= 1" not in text
    assert "inferance: unknown key; allowed keys here: name, input, model, output, inference, cluster," in text


def test_storage_option_values_are_hidden_in_errors_and_redaction(tmp_path):
    data = {"input": {"url": "s3://b/a.zarr", "storage_options": {"secret": 12345}},
            "model": {"path": "m"}, "output": {"url": "o", "chunks": [0, 1]}}
    with pytest.raises(JobSpecError) as err:
        load_job(write(tmp_path, data))
    assert "12345" not in str(err.value)
    data["output"]["chunks"] = [8, 8]
    assert "12345" not in str(JobSpec.from_dict(data).redacted())
    assert "12345" not in repr(JobSpec.from_dict(data))


def test_yaml_goes_through_safe_load(tmp_path):
    with pytest.raises(JobSpecError, match="not valid YAML"):
        load_job(write(tmp_path, "input: !!python/object/apply:os.system ['echo hi']\n"))


def test_missing_spec_file(tmp_path):
    with pytest.raises(JobSpecError, match="No job spec at"):
        load_job(tmp_path / "nope.yaml")
