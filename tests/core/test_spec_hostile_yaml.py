"""Spec files YAML 1.1 reads other than they look, or cannot build: each refused by
:func:`geoseg.core.spec.load_yaml` with a message naming the file, the line and the value (or
read as YAML 1.2 reads it), never a bare ValueError or a silent reinterpretation."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from geoseg.core.spec import load_yaml
from geoseg.errors import JobSpecError


def load(tmp_path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_yaml(path, "job spec", JobSpecError)


def refusal(tmp_path, text: str) -> str:
    with pytest.raises(JobSpecError) as caught:
        load(tmp_path, text)
    return " ".join(str(caught.value).split())


@pytest.mark.parametrize(("text", "said"), [
    ("output:\n  chunks: [0100, 0100]\n", ("line 2, column 12: received 0100, which YAML 1.1 "
     "reads as the octal number 64; write 100 (no leading zero)")),
    ("tile: 010\n", "received 010, which YAML 1.1 reads as the octal number 8; write 10"),
    ("tile: 1:30\n", ("line 1, column 7: received 1:30, which YAML 1.1 reads as the base-60 "
     "number 90; write 90 if that number is meant, or quote it (\"1:30\")")),
    ("x: 1:30.5\n", "base-60 number 90.5"),
])
def test_octal_and_base_60_numbers_are_refused_where_they_stand(tmp_path, text, said):
    message = refusal(tmp_path, text)
    assert said in message and "spec.yaml" in message


def test_unambiguous_numbers_and_quoted_text_are_read(tmp_path):
    data = load(tmp_path, "a: 0x100\nb: 0b1000000\nc: 0\nd: 1_024\ne: '0100'\nf: '1:30'\n"
                          "g: 08\nh: -0\ni: 007\nj: 00\nk: 0_1\nl: !!int \"0755\"\n")
    # 007, 00 and 0_1 are the same number in YAML 1.1 and 1.2; a tagged, quoted value asks for
    # YAML 1.1's reading
    assert data == {"a": 256, "b": 64, "c": 0, "d": 1024, "e": "0100", "f": "1:30", "g": "08",
                    "h": 0, "i": 7, "j": 0, "k": 1, "l": 493}


def test_exponent_numbers_without_a_dot_are_numbers_as_in_yaml_1_2(tmp_path):
    data = load(tmp_path, "a: 1e3\nb: -1E-3\nc: .5e3\nd: 1.0e3\ne: 1.0e+3\nf: '1e3'\ng: 1e3x\n")
    assert data == {"a": 1000.0, "b": -0.001, "c": 500.0, "d": 1000.0, "e": 1000.0, "f": "1e3",
                    "g": "1e3x"}


def test_dates_stay_text(tmp_path):
    assert load(tmp_path, "name: 2024-02-03\nother: 2024-02-30\nlast: 2024-13-01\n") == {
        "name": "2024-02-03", "other": "2024-02-30", "last": "2024-13-01"}


@pytest.mark.parametrize(("text", "said"), [
    ("name: !!timestamp 2024-02-30\n", ("line 1, column 7: received 2024-02-30, which is not a "
     "valid timestamp (day is out of range for month)")),
    ("tile: !!int .inf\n", "line 1, column 7: received .inf, which is not a valid int"),
    ("tile: !!int 0x\n", "received 0x, which is not a valid int"),
    ("compile: !!bool maybe\n", "received maybe, which is not a valid bool"),
    ("overlap: !!float abc\n", "received abc, which is not a valid float"),
    ("tile: " + "9" * 4301 + "\n", ("line 1, column 7: received an integer of 4,301 characters; "
     "expected at most 4,300 digits")),
])
def test_values_their_tag_cannot_build_are_spec_errors(tmp_path, text, said):
    message = refusal(tmp_path, text)
    assert said in message and message.startswith(str(tmp_path / "spec.yaml"))
    assert "9" * 100 not in message


def test_too_many_values_are_refused_while_composing_and_blame_no_alias(tmp_path):
    message = refusal(tmp_path, "[" + "1," * 150_000 + "1]\n")
    assert "received YAML of over 100,000 values; expected at most 100,000" in message
    assert "alias" not in message
    with_aliases = refusal(tmp_path, "a: &a [" + ",".join(["1"] * 1000) + "]\nb: ["
                           + ",".join(["*a"] * 200) + "]\n")
    assert "201,205 values once its aliases (*name) are expanded" in with_aliases


def test_a_huge_list_is_refused_in_bounded_memory(tmp_path):
    (tmp_path / "spec.yaml").write_text("[" + "1," * 500_000 + "1]\n")
    tracemalloc.start()
    try:
        with pytest.raises(JobSpecError, match="over 100,000 values"):
            load_yaml(tmp_path / "spec.yaml", "job spec", JobSpecError)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120 * 2**20  # composed up to the limit only (all of it: over 300 MiB)


def test_a_directory_or_a_pipe_is_said_to_be_one(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(JobSpecError, match=r"dir.yaml is a directory, not a job spec; give the "
                                           r"path of a YAML file"):
        load_yaml(tmp_path / "dir.yaml", "job spec", JobSpecError)
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(JobSpecError, match=r"fifo.yaml is not a regular file \(a pipe, socket or "
                                           r"device\?\), so not a job spec"):
        load_yaml(tmp_path / "fifo.yaml", "job spec", JobSpecError)
    with pytest.raises(JobSpecError, match="No job spec at"):
        load_yaml(tmp_path / "missing.yaml", "job spec", JobSpecError)


def test_a_job_takes_a_tile_in_exponent_form(tmp_path):
    from geoseg.jobs import load_job

    path = tmp_path / "job.yaml"
    path.write_text("input: {url: in.zarr}\nmodel: {path: builtin:demo-unet}\n"
                    "output: {url: out.zarr}\ninference: {tile: 1e3}\n")
    assert load_job(path).inference.tile == 1000


def test_a_key_given_twice_is_still_refused(tmp_path):
    message = refusal(tmp_path, "tile: 0x10\ntile: 1e3\n")
    assert "line 2, column 1: received the key 'tile' a second time (first on line 1)" in message
