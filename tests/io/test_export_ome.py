"""OME-Zarr labels written beside an image, read back with the ``ome-zarr`` package."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Reader
from ome_zarr.writer import write_image

from geoseg.errors import ExportError, OutputExistsError
from geoseg.io.exports import export_ome_labels
from geoseg.jobs import JobSpec, run

FORMATS = {"0.4": (FormatV04, 2), "0.5": (FormatV05, 3)}


def write_ome_image(
    path, data: np.ndarray, axes: str, version: str, scale: dict[str, float]
) -> str:
    """An NGFF image with three levels, written by ome-zarr itself."""
    fmt, zarr_format = FORMATS[version]
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    write_image(data, group, axes=axes, fmt=fmt(), scale_factors=[2, 4], scale={"c": 1.0, **scale})
    return str(path)


def segment(image_url: str, out: str, method: dict, cluster_address: str, chunks: list[int]) -> str:
    spec = {"input": {"url": image_url}, "model": method, "output": {"url": out, "chunks": chunks}}
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    return out


def label_node(image_url: str, name: str):
    """The node ome-zarr's reader finds for label ``name``, walking from the image."""
    nodes = list(Reader(parse_url(image_url))())
    found = [n for n in nodes if n.load(Label) is not None and n.metadata.get("name") == name]
    assert len(found) == 1, [str(n) for n in nodes]
    return found[0]


def image_shapes(image_url: str) -> list[tuple[int, ...]]:
    node = next(iter(Reader(parse_url(image_url))()))
    return [tuple(d.shape) for d in node.data]


def ome_attrs(group: zarr.Group) -> dict:
    attrs = dict(group.attrs)
    return attrs.get("ome", attrs)


def check_labels(image_url: str, out: str, name: str) -> None:
    """Levels shaped like the image's, full resolution equal to the output, coarser levels made of
    classes present at full resolution, colours and names for every class."""
    node = label_node(image_url, name)
    output = zarr.open_group(out, mode="r")
    classes = output["classes"][...]
    levels = [np.asarray(d) for d in node.data]
    lead = levels[0].ndim - classes.ndim  # the image's channel axis, kept with length 1
    assert [lv.shape for lv in levels] == [(1,) * lead + s[lead:] for s in image_shapes(image_url)]
    np.testing.assert_array_equal(levels[0].reshape(classes.shape), classes)
    present = set(np.unique(classes).tolist())
    for level in levels[1:]:
        assert set(np.unique(level).tolist()) <= present
    names = output.attrs["geoseg"]["class_names"]
    colors = output.attrs["geoseg"]["class_colors"]
    assert {v: p["class"] for v, p in node.metadata["properties"].items()} == {
        **dict(enumerate(names)),
        255: "no data",
    }
    for value, color in enumerate(colors):
        assert node.metadata["color"][value] == pytest.approx([c / 255 for c in color[:3]] + [1.0])
    image_transforms = next(iter(Reader(parse_url(image_url))())).metadata[
        "coordinateTransformations"
    ]
    assert node.metadata["coordinateTransformations"] == image_transforms


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_of_a_2d_image(tmp_path, cluster_address, version):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:130, 0:97]
    base = (np.sin(yy / 9) * np.cos(xx / 7) * 100 + 128).astype(np.uint8)
    data = np.stack([base, base // 2, 255 - base]) + rng.integers(
        0, 5, (3, 130, 97), dtype=np.uint8
    )
    image = write_ome_image(tmp_path / "image.ome.zarr", data, "cyx", version, {"y": 0.5, "x": 0.5})
    out = segment(
        image,
        str(tmp_path / "mask.zarr"),
        {"method": "multiotsu", "params": {"feature": "mean", "classes": 3}},
        cluster_address,
        [64, 64],
    )
    assert export_ome_labels(out, image, name="cover") == f"{image}/labels/cover"
    check_labels(image, out, "cover")
    labels = zarr.open_group(f"{image}/labels", mode="r")
    assert ome_attrs(labels)["labels"] == ["cover"]
    label_attrs = ome_attrs(zarr.open_group(f"{image}/labels/cover", mode="r"))
    assert label_attrs["image-label"]["source"] == {"image": "../../"}
    assert ("version" in label_attrs["image-label"]) == (version == "0.4")  # 0.5: under "ome" only
    assert (
        zarr.open_group(f"{image}/labels/cover", mode="r")["0"].metadata.zarr_format
        == FORMATS[version][1]
    )


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_of_a_3d_volume_keep_other_labels(tmp_path, cluster_address, version):
    zz, yy, xx = np.mgrid[0:12, 0:45, 0:38]
    ball = (zz - 6) ** 2 * 4 + (yy - 22) ** 2 + (xx - 19) ** 2 < 15**2
    noise = np.random.default_rng(2).normal(0, 8, ball.shape)
    data = (ball * 120 + 60 + noise).clip(0, 255).astype(np.uint8)[None]  # (c, z, y, x)
    image = write_ome_image(
        tmp_path / "volume.ome.zarr", data, "czyx", version, {"z": 2.0, "y": 0.4, "x": 0.4}
    )
    out = segment(
        image, str(tmp_path / "mask.zarr"), {"method": "otsu"}, cluster_address, [6, 32, 32]
    )
    export_ome_labels(out, image, name="first")
    export_ome_labels(out, image, name="ball", resampling="nearest")
    check_labels(image, out, "ball")
    assert ome_attrs(zarr.open_group(f"{image}/labels", mode="r"))["labels"] == ["first", "ball"]
    with pytest.raises(OutputExistsError, match="already has a label 'ball'"):
        export_ome_labels(out, image, name="ball")
    export_ome_labels(out, image, name="ball", overwrite=True)
    assert ome_attrs(zarr.open_group(f"{image}/labels", mode="r"))["labels"] == ["first", "ball"]
    check_labels(image, out, "ball")


def test_output_of_another_shape_is_refused(tmp_path, cluster_address):
    data = np.random.default_rng(3).integers(0, 255, (1, 40, 40), dtype=np.uint8)
    other = np.random.default_rng(3).integers(0, 255, (1, 50, 40), dtype=np.uint8)
    image = write_ome_image(tmp_path / "a.ome.zarr", data, "cyx", "0.4", {"y": 1.0, "x": 1.0})
    elsewhere = write_ome_image(tmp_path / "b.ome.zarr", other, "cyx", "0.4", {"y": 1.0, "x": 1.0})
    out = segment(
        elsewhere, str(tmp_path / "mask.zarr"), {"method": "otsu"}, cluster_address, [64, 64]
    )
    with pytest.raises(
        ExportError, match=r"shape \(50, 40\).*spatial shapes \[\(40, 40\), \(20, 20\)"
    ):
        export_ome_labels(out, image)
    assert "labels" not in zarr.open_group(image, mode="r")
    with pytest.raises(ExportError, match=r"inside \(or over\) the output store"):
        export_ome_labels(out, out)  # labels would be written into the output it reads
    with pytest.raises(ExportError, match="one path segment"):
        export_ome_labels(out, elsewhere, name="../x")


def test_a_target_that_is_a_file_or_names_missing_levels_is_refused(tmp_path, cluster_address):
    """A plain file as --ome-zarr, or multiscales naming a level array that is not there, ended
    the export with internal errors (FileExistsError, KeyError)."""
    data = np.random.default_rng(4).integers(0, 255, (1, 40, 40), dtype=np.uint8)
    image = write_ome_image(tmp_path / "a.ome.zarr", data, "cyx", "0.4", {"y": 1.0, "x": 1.0})
    out = segment(image, str(tmp_path / "mask.zarr"), {"method": "otsu"}, cluster_address, [64, 64])
    (tmp_path / "plain.tif").write_bytes(b"II*\x00")
    with pytest.raises(ExportError, match="plain.tif is not an OME-Zarr image"):
        export_ome_labels(out, str(tmp_path / "plain.tif"))
    group = zarr.open_group(image, mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"][0]["path"] = "nope"
    group.attrs["multiscales"] = multiscales
    with pytest.raises(ExportError, match=r"its multiscales metadata does not name the arrays of "
                                          r"its levels \(KeyError: 'nope'\)"):
        export_ome_labels(out, image)
    assert "labels" not in zarr.open_group(image, mode="r")


def _move(image_url: str, translation: list[float]) -> None:
    """Give every level of an NGFF 0.4 image a translation after its scale (physical units)."""
    group = zarr.open_group(image_url, mode="r+")
    multiscales = group.attrs["multiscales"]
    for dataset in multiscales[0]["datasets"]:
        dataset["coordinateTransformations"].append(
            {"type": "translation", "translation": translation})
    group.attrs["multiscales"] = multiscales


def test_labels_of_a_volume_on_another_physical_grid_are_refused(tmp_path, cluster_address):
    """Same shape, other voxel spacing or origin: the labels would take the image's transforms
    and lie on other physical points than the voxels they classify. Nothing is written."""
    data = np.random.default_rng(4).integers(0, 255, (1, 12, 40, 36), dtype=np.uint8)
    scale = {"z": 2.0, "y": 0.4, "x": 0.4}
    image = write_ome_image(tmp_path / "read.ome.zarr", data, "czyx", "0.4", scale)
    out = segment(image, str(tmp_path / "mask.zarr"), {"method": "otsu"}, cluster_address,
                  [6, 32, 32])
    coarser = write_ome_image(tmp_path / "coarser.ome.zarr", data, "czyx", "0.4",
                              {**scale, "y": 0.5})
    with pytest.raises(ExportError, match=(
            r"not on the physical grid of level 0 of .*coarser.ome.zarr.*spacing \(2, 0.4, 0.4\), "
            r"origin \(x, y, z\) \(0, 0, 0\); the level's scale \(z, y, x\) is \(2, 0.5, 0.4\) "
            r"and its translation \(z, y, x\) \(0, 0, 0\)")):
        export_ome_labels(out, coarser)
    moved = write_ome_image(tmp_path / "moved.ome.zarr", data, "czyx", "0.4", scale)
    _move(moved, [0.0, 100.0, 0.0, 0.0])
    with pytest.raises(ExportError, match=r"translation \(z, y, x\) \(100, 0, 0\)"):
        export_ome_labels(out, moved)
    for other in (coarser, moved):
        assert "labels" not in zarr.open_group(other, mode="r")
    export_ome_labels(out, image, name="ball")  # the image the job read: one grid
    check_labels(image, out, "ball")


def test_a_2d_output_takes_the_image_transforms_as_before(tmp_path, cluster_address):
    """An output without a voxel affine has no physical grid to compare: its labels take the
    image's placement, as they always did."""
    data = np.random.default_rng(5).integers(0, 255, (1, 40, 40), dtype=np.uint8)
    image = write_ome_image(tmp_path / "a.ome.zarr", data, "cyx", "0.4", {"y": 1.0, "x": 1.0})
    other = write_ome_image(tmp_path / "b.ome.zarr", data, "cyx", "0.4", {"y": 0.5, "x": 0.5})
    out = segment(image, str(tmp_path / "mask.zarr"), {"method": "otsu"}, cluster_address,
                  [64, 64])
    export_ome_labels(out, other, name="cover")
    check_labels(other, out, "cover")


def small_image_and_mask(tmp_path, cluster_address, seed: int, version: str) -> tuple[str, str]:
    """A 64 x 48 random RGB OME-Zarr image and a finished three-class mask of it."""
    data = np.random.default_rng(seed).integers(0, 255, (3, 64, 48), dtype=np.uint8)
    image = write_ome_image(tmp_path / "image.ome.zarr", data, "cyx", version, {"y": 1.0, "x": 1.0})
    out = segment(image, str(tmp_path / "mask.zarr"),
                  {"method": "multiotsu", "params": {"feature": "mean", "classes": 3}},
                  cluster_address, [32, 32])
    return image, out


def test_a_label_that_fails_part_way_is_removed_and_a_rerun_needs_no_overwrite(
        tmp_path, cluster_address, monkeypatch):
    """A full disk stopped the export after its first level: the image kept a label of half
    no-data pixels with no OME metadata, and the rerun was refused as if it existed."""
    from geoseg.io.exports import ome

    image, out = small_image_and_mask(tmp_path, cluster_address, 2, "0.5")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(ome, "_downsample_level", disk_full)
        with pytest.raises(Exception, match=f"Writing labels {image}/labels/cover failed: the "
                                            "disk is full"):
            export_ome_labels(out, image, name="cover")
    assert "cover" not in zarr.open_group(f"{image}/labels", mode="r")
    export_ome_labels(out, image, name="cover")
    check_labels(image, out, "cover")


def test_a_replacing_label_that_fails_keeps_the_old_one(tmp_path, cluster_address, monkeypatch):
    """--overwrite deleted the old label first: a failure then left neither, and the labels
    list named a group that was gone."""
    from geoseg.io.exports import ome

    image, out = small_image_and_mask(tmp_path, cluster_address, 3, "0.4")
    export_ome_labels(out, image, name="cover")
    before = zarr.open_array(f"{image}/labels/cover/0", mode="r")[...]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(ome, "_downsample_level", disk_full)
        with pytest.raises(Exception, match="the disk is full"):
            export_ome_labels(out, image, name="cover", overwrite=True)
    labels = zarr.open_group(f"{image}/labels", mode="r")
    assert sorted(labels.group_keys()) == ["cover"] and ome_attrs(labels)["labels"] == ["cover"]
    np.testing.assert_array_equal(zarr.open_array(f"{image}/labels/cover/0", mode="r")[...], before)
    check_labels(image, out, "cover")
    export_ome_labels(out, image, name="cover", overwrite=True)
    check_labels(image, out, "cover")
    assert sorted(zarr.open_group(f"{image}/labels", mode="r").group_keys()) == ["cover"]


def test_a_label_whose_move_over_the_old_one_fails_keeps_the_old_one(tmp_path, cluster_address,
                                                                     monkeypatch):
    """The old label was deleted before the move; a move that then failed lost both."""
    from fsspec.implementations.local import LocalFileSystem

    image, out = small_image_and_mask(tmp_path, cluster_address, 4, "0.5")
    export_ome_labels(out, image, name="cover")
    before = zarr.open_array(f"{image}/labels/cover/0", mode="r")[...]
    move = LocalFileSystem.mv

    def failing(self, path1, path2, *args, **kwargs):
        if ".partial-" in str(path1):
            raise OSError(5, "Input/output error")
        return move(self, path1, path2, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(LocalFileSystem, "mv", failing)
        with pytest.raises(Exception, match="an input/output error"):
            export_ome_labels(out, image, name="cover", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "image.ome.zarr" / "labels").iterdir()) == \
        ["cover", "zarr.json"]
    np.testing.assert_array_equal(zarr.open_array(f"{image}/labels/cover/0", mode="r")[...], before)
    check_labels(image, out, "cover")


def test_what_an_export_killed_mid_swap_left_is_put_right_by_the_next(tmp_path, cluster_address):
    """Killed between setting the old label aside and moving the new one in, an export left no
    label and two hidden groups, which stayed for good."""
    import shutil

    image, out = small_image_and_mask(tmp_path, cluster_address, 5, "0.5")
    export_ome_labels(out, image, name="cover")
    labels = tmp_path / "image.ome.zarr" / "labels"
    shutil.copytree(labels / "cover", labels / ".cover.partial-0a1b2c3d")
    (labels / "cover").rename(labels / ".cover.old-4e5f6a7b")
    with pytest.raises(OutputExistsError, match="already has a label 'cover'"):
        export_ome_labels(out, image, name="cover")  # the old one is back: no overwrite asked
    assert sorted(p.name for p in labels.iterdir()) == ["cover", "zarr.json"]
    check_labels(image, out, "cover")


def numpy_block_mode(classes: np.ndarray, factor: int, nodata: int) -> np.ndarray:
    """numpy's most frequent class of each ``factor`` x ``factor`` full-resolution block, no-data
    left out (the smallest id on ties; no data where the whole block is)."""
    rows, cols = -(-classes.shape[0] // factor), -(-classes.shape[1] // factor)
    modes = np.full((rows, cols), nodata, classes.dtype)
    for i, j in np.ndindex(rows, cols):
        counts = np.bincount(classes[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].ravel(),
                             minlength=nodata + 1)
        counts[nodata] = 0
        if counts.any():
            modes[i, j] = counts.argmax()
    return modes


def plain_ome_image(path, side: int, n_levels: int) -> str:
    """An NGFF 0.5 image of ``n_levels`` levels halving ``side`` each, chunks of 16."""
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets = []
    for i in range(n_levels):
        root.create_array(str(i), shape=(1, side >> i, side >> i), chunks=(1, 16, 16), dtype="uint8",
                          fill_value=0)
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 2.0 ** i, 2.0 ** i]}]})
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
            {"name": "x", "type": "space"}]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    return str(path)


@pytest.mark.parametrize("window", [None, 8, 32])  # 8: blocks of 8 x 8 counted in pieces
def test_every_label_level_is_the_mode_of_its_full_resolution_block(tmp_path, monkeypatch, window):
    """Each level was the mode of the level before (a mode of modes), not of the block of
    full-resolution pixels it covers, which the COG export's overviews are."""
    from geoseg.io.exports import pyramid
    from tests.io.test_export_cog import finished_output

    if window:
        monkeypatch.setattr(pyramid, "MODE_WINDOW", window)
    rng = np.random.default_rng(7)
    classes = rng.integers(0, 4, (64, 64)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.2] = 255
    classes[:8, :8] = 255  # a whole block of no data stays no data
    out = finished_output(tmp_path / "out.zarr", classes, ["a", "b", "c", "d"])
    image = plain_ome_image(tmp_path / "image.ome.zarr", 64, 4)
    export_ome_labels(out, image, name="seg")
    labels = zarr.open_group(f"{image}/labels/seg", mode="r")
    np.testing.assert_array_equal(labels["0"][0], classes)
    for level in (1, 2, 3):
        np.testing.assert_array_equal(labels[str(level)][0],
                                      numpy_block_mode(classes, 2 ** level, 255), err_msg=str(level))


def test_labels_are_not_exported_into_levels_whose_arrays_disagree_with_their_scales(
        tmp_path, cluster_address):
    """Level 1 declared twice level 0's spacing over an array of another extent: its labels
    were downsampled by the arrays' shapes and placed by the scale, boundaries voxels away."""
    from geoseg.errors import CorruptInputError

    data = np.random.default_rng(3).integers(0, 255, (1, 40, 40), dtype=np.uint8)
    image = write_ome_image(tmp_path / "a.ome.zarr", data, "cyx", "0.4", {"y": 1.0, "x": 1.0})
    out = segment(image, str(tmp_path / "mask.zarr"), {"method": "otsu"}, cluster_address, [64, 64])
    group = zarr.open_group(image, mode="r+")
    group.create_array("s1", shape=(1, 20, 7), dtype="uint8", overwrite=True)  # (20, 20) declared
    with pytest.raises(CorruptInputError, match=r"level 1 holds \(1, 20, 7\) voxels, but its "
                                                r"scale makes level 0's \(1, 40, 40\) about"):
        export_ome_labels(out, image)
    assert "labels" not in zarr.open_group(image, mode="r")
