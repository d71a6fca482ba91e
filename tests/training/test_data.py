"""Chip plans, augmentation, validation tiles, class weights and data checksums."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import tifffile
import zarr
from rasterio.enums import Resampling

from geoseg.errors import TrainingDataError, TrainSpecError
from geoseg.io.readers import open_source
from geoseg.training.checksums import source_checksum
from geoseg.training.data import (
    PLAN_CHIPS,
    ChipLoader,
    Preprocess,
    RasterPair,
    Region,
    augment,
    batch_plans,
    check_stats,
    check_validation,
    class_weights,
    draw_plan,
    measure_stats,
    open_pair,
    stats_bytes,
    validation_windows,
)
from geoseg.training.spec import (
    NormalizationSpec,
    PairSpec,
    ValidationSpec,
    batch_bytes,
    loader_bytes,
)
from tests.conftest import CRS, TRANSFORM, write_zarr


def test_augment_keeps_pixels_and_labels_aligned():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, (8, 8))
    x = np.stack([y * 10.0, y * 10.0 + 1])
    for rot in range(4):
        for flip in (False, True):
            xa, ya = augment(x, y, rot, flip)
            assert xa.flags.c_contiguous and np.array_equal(xa[0], ya * 10.0) and np.array_equal(xa[1], ya * 10.0 + 1)
    assert np.array_equal(augment(x, y, 1, False)[1], np.rot90(y))


def test_plan_is_seeded_and_stays_inside_regions():
    class Pair:
        def __init__(self, region: Region) -> None:
            self.region = region

    pairs = [Pair(Region(0, 100, 0, 50)), Pair(Region(10, 42, 20, 52))]
    a = draw_plan(np.random.default_rng(1), pairs, 500, 32, True, True)
    b = draw_plan(np.random.default_rng(1), pairs, 500, 32, True, True)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("pair", "row", "col", "rot", "flip"))
    for i in range(len(a)):
        region = pairs[a.pair[i]].region
        rows, cols = region.window(int(a.row[i]), int(a.col[i]), 32)
        assert region.row_start <= rows.start and rows.stop <= region.row_stop
        assert region.col_start <= cols.start and cols.stop <= region.col_stop
    assert (a.pair == 0).mean() > 0.9  # 69 x 19 positions against 1 x 1
    assert set(np.unique(a.rot)) == {0, 1, 2, 3} and a.flip.any() and not a.flip.all()
    plain = draw_plan(np.random.default_rng(1), pairs, 50, 32, False, False)
    assert not plain.rot.any() and not plain.flip.any()


def test_validation_tiles_cover_the_region_and_are_thinned_evenly():
    tiles = Region(100, 200, 0, 70).tiles(32)
    covered = np.zeros((300, 70), bool)
    for rows, cols in tiles:
        assert rows.stop - rows.start == 32 and cols.stop - cols.start == 32
        covered[rows, cols] = True
    assert covered[100:200].all() and not covered[:100].any() and not covered[200:].any()

    class Pair:
        region = Region(0, 320, 0, 320)

    picked = validation_windows([Pair()], 32, 7)
    assert len(picked) == 7 and picked[0][1][0].start == 0 and picked[-1][1][0].stop == 320


def test_batch_plans_are_drawn_as_read_and_match_one_draw_up_to_plan_chips():
    class Pair:
        region = Region(0, 100, 0, 80)

    one = draw_plan(np.random.default_rng(3), [Pair()], 25 * 8, 32, True, True)
    parts = list(batch_plans(np.random.default_rng(3), [Pair()], 25, 8, 32, True, True))
    assert [len(p) for p in parts] == [8] * 25  # the same chips as before: seeds keep their batches
    assert all(np.array_equal(np.concatenate([getattr(p, f) for p in parts]), getattr(one, f))
               for f in ("pair", "row", "col", "rot", "flip"))
    start = time.perf_counter()
    endless = batch_plans(np.random.default_rng(3), [Pair()], 10**18, 8, 32, True, True)
    assert len(next(endless)) == 8 and time.perf_counter() - start < 1
    longer = list(batch_plans(np.random.default_rng(3), [Pair()], PLAN_CHIPS // 5, 5, 32, True, True))
    assert len(longer) == PLAN_CHIPS // 5 and {len(p) for p in longer} == {5}


class _Memory:
    """A raster held in memory, read as a source is: ``read(window)`` gives a new array."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.url = data, data.shape, "memory"
        self.georef = SimpleNamespace(nodata=None)

    def read(self, window: tuple[slice, slice]) -> np.ndarray:
        return self.data[(slice(None), *window)].copy()


ROOT = Path(__file__).resolve().parents[2]


def _memory_pair() -> RasterPair:
    rng = np.random.default_rng(0)
    image = _Memory(rng.integers(0, 4000, (3, 200, 200)).astype(np.uint16))
    labels = _Memory(rng.integers(0, 5, (1, 200, 200)).astype(np.uint8))
    return RasterPair("memory", image, labels, Region(0, 200, 0, 200))


def loader_peak() -> int:
    """Bytes allocated at most while a two-thread loader reads six batches of 16 chips of 32."""
    pairs, prep = [_memory_pair()], Preprocess(np.zeros(3, np.float32), np.ones(3, np.float32), 5, 255)
    plans = list(batch_plans(np.random.default_rng(1), pairs, 6, 16, 32, True, True))
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for x, y in ChipLoader(pairs, prep, 32, threads=2).batches(plans):
            time.sleep(0.02)  # training: the threads read ahead meanwhile
            del x, y
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def test_the_chip_loader_holds_no_more_than_the_batch_budget_counts():
    """It held about 5 batches (2 read ahead, the chips of one, that one stacked, the caller's)
    while check_batch counted one; it now holds 3 and the chips being read, as counted."""
    pairs, prep = [_memory_pair()], Preprocess(np.zeros(3, np.float32), np.ones(3, np.float32), 5, 255)
    plans = list(batch_plans(np.random.default_rng(1), pairs, 6, 16, 32, True, True))
    # measured in a process of its own: tracemalloc counts every thread of a process, and a
    # test process may hold threads of earlier tests (a cluster's, a pool's) that allocate
    code = "from tests.training.test_data import loader_peak; print(loader_peak())"
    measured = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=120)
    peak = int(measured.stdout.split()[-1])
    bookkeeping = 64 << 10  # the threads' own interpreter stacks, futures, the pool
    assert 2 * batch_bytes(16, 32, 3) < peak <= loader_bytes(16, 32, 3, threads=2) + bookkeeping, peak

    one_thread = list(ChipLoader(pairs, prep, 32, threads=1).batches(plans))
    for (x, y), plan in zip(ChipLoader(pairs, prep, 32, threads=5).batches(plans), plans):
        expected = x.copy(), y.copy()
        for i in range(len(plan)):  # each chip in its place, whichever thread read it
            window = pairs[0].region.window(int(plan.row[i]), int(plan.col[i]), 32)
            chip = prep(pairs[0].image.read(window), pairs[0].labels.read(window), pairs[0], window)
            expected[0][i], expected[1][i] = augment(*chip, int(plan.rot[i]), bool(plan.flip[i]))
        assert np.array_equal(x, expected[0]) and np.array_equal(y, expected[1])
    assert all(np.array_equal(a, b) for (a, _), (b, _) in
               zip(one_thread, ChipLoader(pairs, prep, 32, threads=3).batches(plans)))


@pytest.mark.timeout(10)
def test_validation_windows_are_computed_not_listed():
    """A region of 10**7 x 10**7 pixels holds 1.6e12 tiles of 8: only those kept are built."""
    class Pair:
        def __init__(self, region: Region) -> None:
            self.region = region

    pairs = [Pair(Region(0, 10**7, 0, 10**7)), Pair(Region(5, 45, 0, 70))]
    picked = validation_windows(pairs, 8, 5)
    assert [i for i, _ in picked] == [0, 0, 0, 0, 1]
    assert picked[0][1] == (slice(0, 8), slice(0, 8)) and picked[-1][1] == (slice(37, 45), slice(62, 70))
    small = [Pair(Region(3, 70, 0, 50)), Pair(Region(0, 20, 10, 90))]
    listed = [(i, w) for i, p in enumerate(small) for w in p.region.tiles(16)]
    assert validation_windows(small, 16, 100) == listed and len(listed) == 5 * 4 + 2 * 5


def test_validation_windows_past_the_window_budget_are_refused_naming_the_key():
    class Pair:
        region = Region(0, 100_000, 0, 100_000)
        bands = 4

    check_validation([Pair()], ValidationSpec(), 4, 32)  # 32 windows of 256^2: 70 MiB
    with pytest.raises(TrainSpecError, match=r"^validation.tile: received 1000000000000; 1 validation "
                                             r"window\(s\) of up to 100000 x 100000 pixels .* take "
                                             r"894.1 GiB .* expected a tile of at most 4704 pixels"):
        check_validation([Pair()], ValidationSpec(tile=10**12), 4, 32)
    with pytest.raises(TrainSpecError, match=r"^validation.max_windows: received 1000000000000; "
                                             r"156250000 validation window\(s\) of up to 8 x 8 pixels "
                                             r".* take 372.5 GiB .* expected at most 838855 window\(s\)"):
        check_validation([Pair()], ValidationSpec(tile=8, max_windows=10**12), 4, 8)


def test_normalization_windows_past_the_window_budget_are_refused_naming_the_key():
    """data.normalization.window was unbounded: each window's read and float64 copies are held."""
    class Pair:
        def __init__(self, height: int, width: int) -> None:
            self.region, self.bands = Region(0, height, 0, width), 4

    def data(window: int | None) -> SimpleNamespace:
        return SimpleNamespace(normalization=NormalizationSpec(window=window))

    check_stats([Pair(10**5, 10**5)], data(4096), 128)  # 4096^2 x 4 bands: 1.9 GiB
    check_stats([Pair(100, 10**6)], data(10**5), 128)  # read at the region's 100 pixels
    with pytest.raises(TrainSpecError, match=r"^data.normalization.window: received 100000; each of "
                                             r"the 32 window\(s\) .* 100000 x 100000 pixels with 4 "
                                             r"band\(s\), takes 1.1 TiB .* over the limit of 2 GiB "
                                             r"\(GEOSEG_MAX_WINDOW_BYTES\); expected a window of at "
                                             r"most 4230 pixels\. Set data.normalization.window lower"):
        check_stats([Pair(10**5, 10**5), Pair(10**6, 10**6)], data(10**5), 128)
    with pytest.raises(TrainSpecError, match=r"^data.normalization.window: received none "
                                             r"\(training.chip: 8192\); .* 8192 x 8192 pixels"):
        check_stats([Pair(10**5, 10**5)], data(None), 8192)


def stats_peak() -> str:
    """``windows window pixels peak``: what measuring the statistics of three 128-pixel windows
    allocated at most."""
    pairs = [_memory_pair()]  # made before the count starts
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        stats = measure_stats(np.random.default_rng(0), pairs, 3, 128, 5, 255)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return f"{stats.windows} {stats.window} {stats.pixels} {peak}"


def test_measure_stats_holds_no_more_than_the_stats_budget_counts():
    """Each window read and its float64 copies are held at once; the next window is read after.
    Measured in a process of its own, as the loader's peak above."""
    code = "from tests.training.test_data import stats_peak; print(stats_peak())"
    measured = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=120)
    windows, window, pixels, peak = map(int, measured.stdout.split()[-4:])
    assert windows == 3 and window == 128 and pixels == 3 * 128 * 128
    one_window = 3 * 128 * 128 * 8  # the float64 copy of its pixels alone
    assert 2 * one_window < peak <= stats_bytes(128, 3) + (16 << 10), peak


def test_class_weights_favour_rare_classes_and_bound_absent_ones():
    weights = class_weights(np.array([900, 90, 10, 0]))
    assert weights.mean() == np.float32(1.0) or abs(weights.mean() - 1) < 1e-6
    assert weights[0] < weights[1] < weights[2] < weights[3] and weights[3] / weights[0] < 31


def test_zarr_checksum_changes_with_data(tmp_path):
    image = np.arange(2 * 40 * 40, dtype=np.uint8).reshape(2, 40, 40)
    url = write_zarr(tmp_path / "a.zarr", image, chunks=(16, 16))
    first = source_checksum(open_source(url))
    assert first == source_checksum(open_source(url)) and first["method"] == "content" and first["files"] == 10
    zarr.open_array(url, mode="r+")[0, 0, 0] = 255
    assert source_checksum(open_source(url))["sha256"] != first["sha256"]


def test_training_pairs_read_levels_and_pages_as_jobs_do(tmp_path):
    """A pair's rasters honour level and pages like a job's input; a volume is refused clearly."""
    rng = np.random.default_rng(0)
    pages = rng.integers(0, 4000, size=(4, 256, 320)).astype("uint16")
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")  # four plain pages: bands, if asked
    labels = rng.integers(0, 3, size=(1, 256, 320)).astype("uint8")
    profile = {"driver": "COG", "width": 320, "height": 256, "count": 1, "dtype": "uint8", "crs": CRS,
               "transform": TRANSFORM, "blocksize": 128, "overview_resampling": Resampling.nearest}
    with rasterio.open(tmp_path / "labels.tif", "w", **profile) as dst:
        dst.write(labels)
    pair = open_pair(PairSpec.model_validate({
        "image": {"url": str(tmp_path / "pages.tif"), "pages": "band"},
        "labels": {"url": str(tmp_path / "labels.tif")}}), "data.train.0")
    assert pair.image.shape == (4, 256, 320) and pair.bands == 4
    np.testing.assert_array_equal(pair.image.read((slice(0, 256), slice(0, 320))), pages)

    with rasterio.open(tmp_path / "labels.tif") as ds:
        overview = ds.read(out_shape=(1, 128, 160), resampling=Resampling.nearest)
    level = open_pair(PairSpec.model_validate({
        "image": {"url": str(tmp_path / "labels.tif"), "level": 1},
        "labels": {"url": str(tmp_path / "labels.tif"), "level": 1}}), "data.train.0")
    assert level.labels.shape == (1, 128, 160)
    np.testing.assert_array_equal(level.labels.read((slice(0, 128), slice(0, 160))), overview)

    with pytest.raises(TrainingDataError, match=r"data\.train\.0\.image: .*pages\.tif is a volume of "
                                                r"shape \(1, 4, 256, 320\).*pages: band"):
        open_pair(PairSpec.model_validate({
            "image": {"url": str(tmp_path / "pages.tif")},
            "labels": {"url": str(tmp_path / "labels.tif")}}), "data.train.0")


def _geotiff(path: Path, data: np.ndarray, **georef: object) -> str:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype, **georef}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def test_labels_on_another_grid_of_the_same_shape_are_refused(tmp_path):
    """Labels 10 pixels east of the image, or in another CRS, would label other ground than
    the pixels beside them: refused with both grids; no georeference on one side matches any."""
    from rasterio.transform import Affine

    image = _geotiff(tmp_path / "image.tif", np.ones((3, 64, 80), np.uint8), crs=CRS,
                     transform=TRANSFORM)
    labels = np.zeros((1, 64, 80), np.uint8)
    shifted = TRANSFORM * Affine.translation(10, 0)
    cases = {"shifted": ({"crs": CRS, "transform": shifted},
                         (r"not on one grid: transform .* \(image against labels\), the labels "
                         r"shifted by 0 rows and 10 columns; expected labels on the image's grid")),
             "wgs84": ({"crs": "EPSG:4326", "transform": Affine(0.001, 0, 10, 0, -0.001, 50)},
                       r"not on one grid: transform .*gdalwarp -r near")}
    for name, (georef, message) in cases.items():
        url = _geotiff(tmp_path / f"{name}.tif", labels, **georef)
        with pytest.raises(TrainingDataError, match=rf"data\.train\.0: image .*image\.tif and labels "
                                                    rf".*{name}\.tif are {message}"):
            open_pair(PairSpec.model_validate({"image": {"url": image}, "labels": {"url": url}}),
                      "data.train.0")
    for name, georef in (("same", {"crs": CRS, "transform": TRANSFORM}), ("plain", {})):
        url = _geotiff(tmp_path / f"{name}.tif", labels, **georef)
        pair = open_pair(PairSpec.model_validate({"image": {"url": image}, "labels": {"url": url}}),
                         "data.train.0")
        assert pair.labels.shape == (1, 64, 80)


def test_float_labels_that_are_no_class_ids_are_refused_where_nan_and_whole_values_train():
    """1.6 would train as class 1: labels resampled with a smoothing method are refused."""
    from geoseg.training.data import Preprocess

    prep = Preprocess(np.zeros(1, np.float32), np.ones(1, np.float32), 3, 255)
    pair = SimpleNamespace(name="data.train.0", labels=SimpleNamespace(
        url="labels.tif", georef=SimpleNamespace(nodata=None)))
    window = (slice(0, 2), slice(0, 3))
    labels = np.array([[0.0, 1.0, np.nan], [2.0, 1.0, 0.0]])
    valid = np.ones(labels.shape, bool)
    np.testing.assert_array_equal(prep.targets(labels, valid, pair, window),
                                  [[0, 1, 255], [2, 1, 0]])
    labels[1, 1] = 1.6
    with pytest.raises(TrainingDataError, match=r"data\.train\.0\.labels \(labels\.tif\) holds the "
                                                r"value 1\.6, which is no class id, in window rows "
                                                r"0:2, columns 0:3; .* nearest neighbour"):
        prep.targets(labels, valid, pair, window)
    valid[1, 1] = False  # under no-data in the image: never trained on, so not checked
    assert prep.targets(labels, valid, pair, window)[1, 1] == 255
    valid[1, 1] = True
    for odd, said in ((np.inf, "inf"), (-np.inf, "-inf"), (1e30, "1e+30")):  # no int64 garbage id
        labels[1, 1] = odd
        with pytest.raises(TrainingDataError, match=re.escape(f"the value {said}, which is no")):
            prep.targets(labels, valid, pair, window)


@pytest.mark.parametrize("nodata", [float(np.finfo(np.float32).min), -9999.5, 1e20, -9999.0])
def test_float_labels_declaring_a_nodata_no_class_id_can_be_ignore_those_pixels(nodata):
    """GDAL's usual float no-data (-3.4e38) was checked as a class id before it was masked: the
    labels were refused as resampled with a smoothing method."""
    from geoseg.training.data import Preprocess

    prep = Preprocess(np.zeros(1, np.float32), np.ones(1, np.float32), 3, 255)
    pair = SimpleNamespace(name="data.train.0", labels=SimpleNamespace(
        url="labels.tif", georef=SimpleNamespace(nodata=nodata)))
    labels = np.array([[0.0, 1.0, nodata], [2.0, nodata, 0.0]], np.float32)
    got = prep.targets(labels, np.ones(labels.shape, bool), pair, (slice(0, 2), slice(0, 3)))
    np.testing.assert_array_equal(got, [[0, 1, 255], [2, 255, 0]])
