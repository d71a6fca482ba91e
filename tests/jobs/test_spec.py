"""Job specs: precise errors for every problem, secrets never echoed."""

from __future__ import annotations

import time

import pydantic
import pytest
import yaml

from geoseg.errors import JobSpecError
from geoseg.jobs import JobSpec, load_job
from tests.conftest import alias_bomb


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


def test_empty_bands_band_zero_and_an_empty_name_are_named(tmp_path):
    with pytest.raises(JobSpecError) as err:
        load_job(write(tmp_path, {"name": "", "input": {"url": "a", "bands": []},
                                  "model": {"path": "builtin:demo-unet"}, "output": {"url": "o"}}))
    text = str(err.value)
    assert "name: received '' (str); expected String should have at least 1 character" in text
    assert "input.bands: received [] (list); expected List should have at least 1 item" in text
    with pytest.raises(JobSpecError, match=r"input.bands.1: received 0 \(int\); expected greater "
                                           r"than or equal to 1"):
        load_job(write(tmp_path, {"input": {"url": "a", "bands": [3, 0]},
                                  "model": {"path": "builtin:demo-unet"}, "output": {"url": "o"}}))


@pytest.mark.parametrize("name", ["evil\x1b[2J\x1b[31mRED", "two\nlines", "bell\x07"])
def test_a_job_name_with_control_characters_is_refused(tmp_path, name):
    """The name is printed in every log line and runs table: escape codes cleared the screen."""
    with pytest.raises(JobSpecError, match=r"name: received .*; expected a name of printable "
                                           r"characters \(no control characters"):
        load_job(write(tmp_path, {"name": name, "input": {"url": "a"},
                                  "model": {"path": "builtin:demo-unet"}, "output": {"url": "o"}}))


def test_true_or_false_where_a_number_is_expected_is_refused_not_taken_as_one(tmp_path):
    with pytest.raises(JobSpecError) as err:
        load_job(write(tmp_path, {"input": {"url": "a", "bands": [1, True]},
                                  "model": {"path": "builtin:demo-unet"},
                                  "output": {"url": "o", "chunks": [True, 256], "nodata_class": False,
                                             "probabilities": True},
                                  "inference": {"batch_size": True}}))
    text = str(err.value)
    assert "4 problem(s)" in text  # probabilities is a true/false setting
    for key, shown in [("input.bands", "[1, True]"), ("output.chunks", "[True, 256]"),
                       ("output.nodata_class", "False"), ("inference.batch_size", "True")]:
        assert f"{key}: received {shown} (" in text and "expected numbers, not true or false" in text


@pytest.mark.parametrize("key", ["chunks", "shards"])
def test_one_number_for_the_output_grid_says_that_it_takes_one_per_axis(tmp_path, key):
    with pytest.raises(JobSpecError) as err:
        load_job(write(tmp_path, {"input": {"url": "a"}, "model": {"path": "builtin:demo-unet"},
                                  "output": {"url": "o", key: 128}}))
    assert (f"output.{key}: received 128 (int); expected one size per spatial axis, in a list: "
            "[1024, 1024] for an image (y, x), [64, 128, 128] for a volume") in str(err.value)


@pytest.mark.parametrize("url, stem, flag", [("/out/mask.nii.gz", "/out/mask", "--nifti"),
                                              ("s3://b/scene.TIF", "s3://b/scene", "--cog"),
                                              ("/mask.nii/", "/mask", "--nifti")])
def test_an_output_named_as_a_file_points_at_export(tmp_path, url, stem, flag):
    """Relative URLs are resolved against the spec's folder first; these are absolute."""
    with pytest.raises(JobSpecError) as err:
        load_job(write(tmp_path, {"input": {"url": "a"}, "model": {"path": "builtin:demo-unet"},
                                  "output": {"url": url}}))
    assert f"expected a Zarr store's URL, such as {stem}.zarr: a job writes a Zarr store" in str(err.value)
    assert f"geoseg export {stem}.zarr {flag} {url}" in str(err.value)
    load_job(write(tmp_path, {"input": {"url": "a"}, "model": {"path": "builtin:demo-unet"},
                              "output": {"url": "out/tiff_masks"}}))  # a name, not a suffix


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


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_refused_before_it_expands(tmp_path, levels):
    started = time.perf_counter()
    with pytest.raises(JobSpecError, match=r"received YAML of [\d,]+ values once its aliases \(\*name\) "
                                           r"are expanded; expected at most 100,000"):
        load_job(write(tmp_path, alias_bomb(levels)))
    assert time.perf_counter() - started < 2


def test_a_long_value_costs_linear_time_and_a_huge_file_is_refused_unread(tmp_path):
    """Finding URLs in a 200,000-character word was quadratic (over 100 s); a spec file over
    MAX_BYTES is refused by its size."""
    from geoseg.core import redact

    started = time.perf_counter()
    assert redact.url_secrets("x" * 200_000) == set()
    assert redact.scrub("a" * 200_000 + "s3://user:pw@bucket/k") == "a" * 200_000 + "s3://bucket/k"
    assert time.perf_counter() - started < 2
    huge = tmp_path / "job.yaml"
    huge.write_text("name: " + "x" * (4 * 2**20) + "\n")
    with pytest.raises(JobSpecError, match=r"received a job spec of 4,194,311 bytes; expected "
                                           r"at most 4,194,304"):
        load_job(huge)


def test_anchors_and_aliases_of_ordinary_size_still_work(tmp_path):
    spec = load_job(write(tmp_path, "input: {url: in.zarr, storage_options: &so {anon: true}}\n"
                                    "model: {path: builtin:demo-unet}\n"
                                    "output: {url: o.zarr, chunks: &c [64, 64], storage_options: *so}\n"
                                    "inference: {tile: *c}\n"))
    assert spec.output.storage_options == {"anon": True} and spec.inference.tile == (64, 64)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    with pytest.raises(JobSpecError, match="line 2, column 8: received an alias .* inside the value "
                                           "of its own anchor"):
        load_job(write(tmp_path, "name: x\ninput: &i {url: a.zarr, again: *i}\n"))


@pytest.mark.parametrize(("levels", "said"), [(150, "over 100 levels"), (200_000, "over 100 levels")])
def test_deep_nesting_is_refused(tmp_path, levels, said):
    with pytest.raises(JobSpecError, match=f"received YAML nested {said} deep; expected at most 100"):
        load_job(write(tmp_path, "model: {params: " + "[" * levels + "]" * levels + "}\n"))


def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path):
    with pytest.raises(JobSpecError, match=r"line 4, column 1: received the key 'output' a second "
                                           r"time \(first on line 3\); expected each key once"):
        load_job(write(tmp_path, "input: {url: in.zarr}\nmodel: {path: builtin:demo-unet}\n"
                                 "output: {url: out.zarr}\noutput: {url: in.zarr}\n"))


def test_merge_keys_may_still_be_overridden(tmp_path):
    spec = load_job(write(tmp_path, "input: &in {url: in.zarr, storage_options: {anon: true}}\n"
                                    "model: {path: builtin:demo-unet}\n"
                                    "output: {<<: *in, url: o.zarr}\n"))
    assert spec.output.url.endswith("o.zarr") and spec.output.storage_options == {"anon": True}


def test_missing_spec_file(tmp_path):
    with pytest.raises(JobSpecError, match="No job spec at"):
        load_job(tmp_path / "nope.yaml")
