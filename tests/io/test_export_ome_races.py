"""OME-Zarr label exports that overlap, or that a kill cut short: the image's ``labels`` list
names every label whose export succeeded, and a rerun finishes what a killed export left."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import zarr

from geoseg.errors import OutputExistsError
from geoseg.io.exports import export_ome_labels, ome
from tests.io.test_export_cog import finished_output
from tests.io.test_export_ome import ome_attrs, plain_ome_image


@pytest.fixture
def made(tmp_path) -> tuple[str, str]:
    """A finished 64 x 64 output and an OME-Zarr image (NGFF 0.5) of its shape."""
    classes = (np.arange(64 * 64).reshape(64, 64) % 3).astype(np.uint8)
    out = finished_output(tmp_path / "out.zarr", classes, ["a", "b", "c"])
    return out, plain_ome_image(tmp_path / "image.ome.zarr", 64, 2)


def listed(image: str) -> list[str]:
    return ome_attrs(zarr.open_group(f"{image}/labels", mode="r"))["labels"]


def on_disk(image: str) -> list[str]:
    return sorted(e for e in os.listdir(f"{image}/labels") if e != "zarr.json")


def test_two_label_exports_at_once_both_stay_listed(made, monkeypatch):
    """Both exports said "wrote", both label groups were on disk, but the list named one: each
    wrote the list it had read when it began. Here both have written their label before either
    lists it."""
    out, image = made
    both_written = threading.Barrier(2, timeout=180)
    write = ome._write_label

    def then_wait(*args, **kwargs):
        write(*args, **kwargs)
        both_written.wait()

    monkeypatch.setattr(ome, "_write_label", then_wait)
    failed: list[BaseException] = []

    def export(name: str) -> None:
        try:
            export_ome_labels(out, image, name=name)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failed.append(exc)

    threads = [threading.Thread(target=export, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failed, failed
    assert sorted(listed(image)) == ["a", "b"] and on_disk(image) == ["a", "b"]


KILLED_ONCE_WRITTEN = """
import os, signal, sys
from geoseg.io.exports import export_ome_labels, ome

write = ome._write_label
def then_killed(*args, **kwargs):
    write(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the label written, not yet in place nor listed
ome._write_label = then_killed
export_ome_labels(sys.argv[1], sys.argv[2], name="seg")
"""


def test_a_first_export_killed_part_way_is_finished_by_the_rerun(made):
    """A new label was written under its own name: killed, it left ``labels/seg`` unlisted, and
    the rerun refused it as an existing label (pass --overwrite)."""
    out, image = made
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_ONCE_WRITTEN), out, image],
                            capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -9, killed.stderr
    assert "seg" not in on_disk(image)  # only a hidden part-written one
    export_ome_labels(out, image, name="seg")
    assert listed(image) == ["seg"] and on_disk(image) == ["seg"]
    np.testing.assert_array_equal(zarr.open_group(f"{image}/labels/seg")["0"][0],
                                  zarr.open_group(out)["classes"][...])


def test_an_unlisted_label_without_its_metadata_is_replaced_without_overwrite(made):
    """What a killed first export of an earlier version left (a group under the label's name,
    its metadata never written, not listed) is unfinished: the rerun replaces it."""
    out, image = made
    zarr.open_group(image).require_group("labels").create_group("seg").create_array(
        "0", shape=(1, 64, 64), dtype="uint8")
    export_ome_labels(out, image, name="seg")
    assert listed(image) == ["seg"] and on_disk(image) == ["seg"]
    assert "image-label" in ome_attrs(zarr.open_group(f"{image}/labels/seg", mode="r"))


def test_a_whole_label_is_kept_whether_listed_or_not(made):
    """A label with its metadata (another tool's, that did not list it) is a label: kept."""
    out, image = made
    export_ome_labels(out, image, name="seg")
    labels = zarr.open_group(f"{image}/labels")
    labels.attrs["ome"] = {**labels.attrs["ome"], "labels": []}
    with pytest.raises(OutputExistsError, match="already has a label 'seg'"):
        export_ome_labels(out, image, name="seg")
    export_ome_labels(out, image, name="seg", overwrite=True)
    assert listed(image) == ["seg"]
