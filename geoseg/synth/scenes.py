"""Synthetic, georeferenced, satellite-like RGB scenes with ground truth.

A scene is built in layers, each from its own random stream derived from the
seed, so a seed always gives the same scene:

1. land cover: smooth low-frequency random fields thresholded into water
   (lakes, plus sometimes a meandering river), vegetation and bare soil;
   agricultural areas are split into Voronoi parcels, each crop or bare;
2. roads: gently bent polylines across the scene, branches, and street grids
   around a few towns; roads skip water pixels (no bridges);
3. buildings: small rotated rectangles lined up along the streets, dense near
   town centres and sparse in the countryside, on free land only; on request
   some get touching neighbours (semi-detached pairs, short terraces) that
   share a wall, drawn from a fifth stream so the default scene is unchanged;
4. rendering: per-class colours with texture at several scales, roof colours
   and gable shading, cast shadows, a slight blur, haze, sensor noise.

Every class is recognisable from its colour and the texture or shape within
about 100 px, which keeps the scenes learnable by a small CNN. Pixel values lie
in ``1..255``: ``0`` stays free as the project's nodata value. Every building
also has its own instance id, for instance segmentation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage import draw

from geoseg.core.classes import ClassInfo
from geoseg.errors import ParameterError

__all__ = ["SCENE_CLASSES", "Scene", "make_scene"]

WATER, VEGETATION, BARE_SOIL, ROAD, BUILDING = range(5)

CRS = "EPSG:32618"
PIXEL_SIZE = 10.0
ORIGIN = (500000.0, 4500000.0)
MIN_SIZE = 16

FloatArray = NDArray[np.float32]
Point = NDArray[np.float64]


SCENE_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo("water", (31, 120, 180)),
    ClassInfo("vegetation", (51, 160, 44)),
    ClassInfo("bare_soil", (205, 170, 100)),
    ClassInfo("road", (100, 100, 100)),
    ClassInfo("building", (227, 26, 28)),
)


@dataclass(frozen=True, eq=False)
class Scene:
    """A synthetic scene: image, ground truth and georeferencing.

    Attributes
    ----------
    image : numpy.ndarray
        ``uint8`` array of shape ``(3, H, W)``, bands red, green, blue, values
        ``1..255``.
    labels : numpy.ndarray
        ``uint8`` array of shape ``(H, W)`` with class ids ``0..4`` indexing
        `classes`.
    instances : numpy.ndarray
        ``uint32`` array of shape ``(H, W)``: ``0`` off buildings, else the
        building's id, ids contiguous from ``1``. Each building is one
        4-connected region; touching buildings share a wall but keep their ids.
    crs : str
        Coordinate reference system, ``"EPSG:32618"`` (UTM 18N).
    transform : tuple of float
        Affine ``(a, b, c, d, e, f)`` in ``rasterio.Affine`` order: 10 m
        pixels, north-up (``e < 0``).
    classes : tuple of ClassInfo
        The classes, in id order.
    bands : tuple of str
        Band names of `image`.
    """

    image: NDArray[np.uint8]
    labels: NDArray[np.uint8]
    instances: NDArray[np.uint32]
    crs: str
    transform: tuple[float, float, float, float, float, float]
    classes: tuple[ClassInfo, ...]
    bands: tuple[str, ...] = ("red", "green", "blue")

    @property
    def height(self) -> int:
        """Number of rows."""
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        """Number of columns."""
        return int(self.labels.shape[1])


def make_scene(height: int, width: int, *, seed: int = 0, touching: float = 0.0) -> Scene:
    """Generate a synthetic satellite-like scene with ground truth.

    Parameters
    ----------
    height, width : int
        Scene size in pixels, each at least 16.
    seed : int, optional
        Non-negative seed; the same seed gives the same scene.
    touching : float, optional
        Probability, per building, of giving it touching neighbours along its
        street (a semi-detached partner, sometimes a third house making a short
        terrace) that share a wall with it, each with its own instance id. A
        neighbour is only built where its plot is free, so the realised share is
        lower. ``0`` (the default) gives exactly the scene of earlier versions.

    Returns
    -------
    Scene
        The image, labels, building instances and georeferencing.

    Raises
    ------
    ValueError
        If a size is below 16, the seed is negative or `touching` is outside
        ``[0, 1]``.
    """
    shape = _check_args(height, width, seed)
    touching = _check_share(touching, "touching")
    cover_rng, road_rng, building_rng, render_rng, touch_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    cover = _land_cover(cover_rng, shape)
    roads, towns = _road_layout(road_rng, shape, cover.labels == WATER)
    _urbanize(cover, towns)
    _burn_roads(cover.labels, roads)
    neighbours = _Neighbours(touch_rng, touching) if touching > 0 else None
    buildings = _place_buildings(building_rng, cover.labels, roads, towns, neighbours)
    image = _render(render_rng, cover, buildings)
    return Scene(
        image=image,
        labels=cover.labels,
        instances=_instances(shape, buildings),
        crs=CRS,
        transform=_transform(seed),
        classes=SCENE_CLASSES,
    )


def _check_args(height: int, width: int, seed: int) -> tuple[int, int]:
    """Validate the arguments of `make_scene`; return the shape."""
    if int(height) != height or int(width) != width:
        raise ParameterError(f"height and width must be integers, got {height!r} x {width!r}")
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ParameterError(
            f"scene size {height} x {width} is too small: height and width must be >= {MIN_SIZE}"
        )
    if int(seed) != seed or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    return int(height), int(width)


def _check_share(value: float, name: str) -> float:
    """Validate a probability argument of `make_scene`."""
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ParameterError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _transform(seed: int) -> tuple[float, float, float, float, float, float]:
    """North-up 10 m transform whose origin moves with the seed (within UTM bounds)."""
    x0 = ORIGIN[0] + (seed % 64) * 512 * PIXEL_SIZE
    y0 = ORIGIN[1] - ((seed // 64) % 64) * 512 * PIXEL_SIZE
    return (PIXEL_SIZE, 0.0, x0, 0.0, -PIXEL_SIZE, y0)


# --------------------------------------------------------------------------
# Random fields
# --------------------------------------------------------------------------


def _interp_matrix(n_out: int, cell: float, shift: float) -> FloatArray:
    """Weights that smoothly interpolate nodes spaced `cell` px onto `n_out` px."""
    n_low = math.ceil(n_out / cell) + 6
    nodes = (np.arange(n_low, dtype=np.float32) - 3.0 + shift) * cell
    pos = np.arange(n_out, dtype=np.float32)
    dist = (pos[:, None] - nodes[None, :]) / np.float32(0.75 * cell)
    weights = np.exp(-0.5 * dist * dist)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> FloatArray:
    """Zero-mean, unit-variance random field with features about `cell` px across.

    Coarse fields are interpolated from a low-resolution grid with two small
    matrix products; fine ones are gaussian-filtered white noise.
    """
    if cell < 8:
        white = rng.standard_normal(shape, dtype=np.float32)
        field = ndimage.gaussian_filter(white, sigma=cell / 2.0, mode="reflect", truncate=2.5)
    else:
        rows = _interp_matrix(shape[0], cell, rng.random())
        cols = _interp_matrix(shape[1], cell, rng.random())
        low = rng.standard_normal((rows.shape[1], cols.shape[1]), dtype=np.float32)
        field = (rows @ low) @ cols.T
    return _standardize(field)


def _streak_noise(rng: np.random.Generator, shape: tuple[int, int], axis: int) -> FloatArray:
    """Unit-variance noise stretched along `axis` (plough furrows, crop rows).

    White noise is interpolated from nodes 8 px apart along `axis` only, with
    one matrix product.
    """
    weights = _interp_matrix(shape[axis], 8.0, rng.random())
    if axis == 0:
        field = weights @ rng.standard_normal((weights.shape[1], shape[1]), dtype=np.float32)
    else:
        field = rng.standard_normal((shape[0], weights.shape[1]), dtype=np.float32) @ weights.T
    return _standardize(field)


def _fbm(
    rng: np.random.Generator, shape: tuple[int, int], octaves: tuple[tuple[float, float], ...]
) -> FloatArray:
    """Sum of `_smooth_noise` octaves given as ``(cell, amplitude)`` pairs."""
    total = np.zeros(shape, dtype=np.float32)
    for cell, amplitude in octaves:
        total += np.float32(amplitude) * _smooth_noise(rng, shape, cell)
    return total


def _standardize(field: FloatArray) -> FloatArray:
    """Scale `field` in place to zero mean and unit variance (estimated on a subsample)."""
    sample = _subsample(field)
    field -= np.float32(sample.mean())
    std = float(sample.std())
    if std > 0:
        field *= np.float32(1.0 / std)
    return field


def _subsample(field: np.ndarray) -> np.ndarray:
    """A strided view of `field` with at most about a million pixels."""
    step = max(1, int(math.sqrt(field.size / 1e6)))
    return field[::step, ::step]


def _quantile(field: FloatArray, q: float) -> float:
    """Approximate `q` quantile of `field`."""
    return float(np.quantile(_subsample(field), q))


# --------------------------------------------------------------------------
# Land cover
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cover:
    """Land-cover layout: labels plus what rendering needs to texture them."""

    labels: NDArray[np.uint8]
    parcels: NDArray[np.int32]
    n_parcels: int
    natural: NDArray[np.bool_]
    urban: NDArray[np.bool_]


def _land_cover(rng: np.random.Generator, shape: tuple[int, int]) -> _Cover:
    """Water, vegetation and bare soil from thresholded smooth fields and parcels."""
    water = _water_mask(rng, shape)
    wild = _fbm(rng, shape, ((300.0, 1.0), (90.0, 0.4), (25.0, 0.12)))
    natural = wild > _quantile(wild, rng.uniform(0.35, 0.65))
    del wild
    parcels, n_parcels = _parcels(rng, shape, cell=rng.uniform(45.0, 75.0))
    bare_parcel = rng.random(n_parcels) < rng.uniform(0.25, 0.45)
    dry = _fbm(rng, shape, ((160.0, 1.0), (50.0, 0.4), (14.0, 0.15)))
    soil = np.where(natural, dry > _quantile(dry, 0.8), bare_parcel[parcels])
    del dry
    labels = np.where(soil, np.uint8(BARE_SOIL), np.uint8(VEGETATION))
    labels[water] = WATER
    urban = np.zeros(shape, dtype=bool)  # filled in by _urbanize once towns exist
    return _Cover(labels=labels, parcels=parcels, n_parcels=n_parcels, natural=natural, urban=urban)


def _water_mask(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Lakes in the lowest part of a smooth 'elevation' field, plus maybe a river."""
    elevation = _fbm(rng, shape, ((420.0, 1.0), (140.0, 0.45), (40.0, 0.18), (12.0, 0.06)))
    water = elevation < _quantile(elevation, rng.uniform(0.08, 0.18))
    del elevation
    if rng.random() < 0.6:
        start, target = _border_pair(rng, shape)
        heading = _heading(target - start)
        step = 12.0
        steps = _max_steps(shape, step)
        path = _wander(rng, shape, start, heading, step, turn=0.25, max_steps=steps)
        _draw_polyline(water, path, rng.uniform(7.0, 16.0))
    return water


def _parcels(
    rng: np.random.Generator, shape: tuple[int, int], cell: float
) -> tuple[NDArray[np.int32], int]:
    """Voronoi parcels of a jittered grid of seeds, computed at half resolution.

    Returns
    -------
    ids : numpy.ndarray
        ``int32`` parcel id per pixel.
    count : int
        Number of parcel ids (ids are ``0..count-1``).
    """
    half = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    step = cell / 2.0
    ny, nx = int(half[0] // step) + 2, int(half[1] // step) + 2
    seed_y = (np.arange(ny)[:, None] + rng.uniform(0.1, 0.9, (ny, nx))) * step
    seed_x = (np.arange(nx)[None, :] + rng.uniform(0.1, 0.9, (ny, nx))) * step
    yy = np.arange(half[0], dtype=np.float32)[:, None]
    xx = np.arange(half[1], dtype=np.float32)[None, :]
    iy, ix = (yy // step).astype(np.intp), (xx // step).astype(np.intp)
    best = np.full(half, np.inf, dtype=np.float32)
    ids = np.zeros(half, dtype=np.int32)
    for dy in (-1, 0, 1):
        jy = np.clip(iy + dy, 0, ny - 1)
        for dx in (-1, 0, 1):
            jx = np.clip(ix + dx, 0, nx - 1)
            dist = (yy - seed_y[jy, jx].astype(np.float32)) ** 2
            dist += (xx - seed_x[jy, jx].astype(np.float32)) ** 2
            closer = dist < best
            best[closer] = dist[closer]
            ids[closer] = (jy * nx + jx).astype(np.int32)[closer]
    rows = np.arange(shape[0]) // 2
    cols = np.arange(shape[1]) // 2
    return ids[rows[:, None], cols[None, :]], ny * nx


# --------------------------------------------------------------------------
# Roads and towns
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Road:
    """A road centre line as ``(row, col)`` vertices, and its width in px."""

    points: NDArray[np.float64]
    width: float


@dataclass(frozen=True)
class _Town:
    """A town: centre ``(row, col)``, radius and street-grid angle, and the
    discs ``(row, col, radius)`` whose union is its built-up area."""

    center: Point
    radius: float
    angle: float
    blobs: tuple[tuple[float, float, float], ...]


def _make_town(rng: np.random.Generator, center: Point, angle: float) -> _Town:
    """A town of random size whose built-up area is an irregular blob."""
    radius = rng.uniform(70.0, 200.0)
    blobs = [(float(center[0]), float(center[1]), 0.85 * radius)]
    for _ in range(6):
        offset = rng.uniform(0.3, 0.75) * radius
        theta = rng.uniform(0.0, 2.0 * math.pi)
        blob_radius = rng.uniform(0.3, 0.55) * radius
        row = center[0] + offset * math.sin(theta)
        col = center[1] + offset * math.cos(theta)
        blobs.append((row, col, blob_radius))
    return _Town(center, radius, angle + rng.normal(0.0, 0.05), tuple(blobs))


def _road_layout(
    rng: np.random.Generator, shape: tuple[int, int], water: NDArray[np.bool_]
) -> tuple[list[_Road], list[_Town]]:
    """Main roads, their branches, and towns with street grids."""
    roads = _main_roads(rng, shape)
    roads += _branch_roads(rng, shape, roads)
    towns = _choose_towns(rng, shape, roads, water)
    for town in towns:
        roads += _town_streets(rng, town)
    return roads, towns


def _heading(vector: Point) -> float:
    """Angle of a ``(row, col)`` vector, such that it equals ``(sin, cos)`` of it."""
    return math.atan2(float(vector[0]), float(vector[1]))


def _max_steps(shape: tuple[int, int], step: float) -> int:
    """Enough steps of length `step` to cross the scene a couple of times."""
    return int(2 * (shape[0] + shape[1]) / step) + 2


def _border_point(rng: np.random.Generator, shape: tuple[int, int]) -> Point:
    """A uniformly random point on the scene border."""
    h, w = shape
    t = rng.uniform(0.0, 2.0 * (h + w))
    if t < w:
        return np.array([0.0, t])
    if t < w + h:
        return np.array([t - w, w - 1.0])
    if t < 2 * w + h:
        return np.array([h - 1.0, t - w - h])
    return np.array([t - 2 * w - h, 0.0])


def _border_pair(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[Point, Point]:
    """Two border points well apart, so a path between them crosses the scene."""
    start = _border_point(rng, shape)
    target = _border_point(rng, shape)
    for _ in range(20):
        if np.hypot(*(target - start)) > 0.6 * min(shape):
            break
        target = _border_point(rng, shape)
    return start, target


def _wander(
    rng: np.random.Generator,
    shape: tuple[int, int],
    start: Point,
    heading: float,
    step: float,
    turn: float,
    max_steps: int,
) -> NDArray[np.float64]:
    """A gently bending path from `start`, stopping once well outside the scene."""
    points = [np.asarray(start, dtype=float)]
    point, deviation, margin = points[0], 0.0, 2.0 * step
    for _ in range(max_steps):
        deviation = 0.85 * deviation + rng.normal(0.0, turn)
        angle = heading + deviation
        point = point + step * np.array([math.sin(angle), math.cos(angle)])
        points.append(point)
        inside_rows = -margin <= point[0] <= shape[0] + margin
        if not (inside_rows and -margin <= point[1] <= shape[1] + margin):
            break
    return np.array(points)


def _main_roads(rng: np.random.Generator, shape: tuple[int, int]) -> list[_Road]:
    """Roads crossing the scene from border to border."""
    count = max(1, round((shape[0] + shape[1]) / 1000 * rng.uniform(0.8, 1.4)))
    roads = []
    for _ in range(count):
        start, target = _border_pair(rng, shape)
        step = rng.uniform(40.0, 80.0)
        heading = _heading(target - start)
        path = _wander(rng, shape, start, heading, step, 0.06, _max_steps(shape, step))
        roads.append(_Road(path, rng.uniform(5.0, 7.0)))
    return roads


def _branch_roads(
    rng: np.random.Generator, shape: tuple[int, int], parents: list[_Road]
) -> list[_Road]:
    """Side roads leaving existing roads at roughly right angles."""
    branches = []
    for _ in range(rng.poisson(1.2 * len(parents))):
        points = parents[rng.integers(len(parents))].points
        if len(points) < 3:
            continue
        i = int(rng.integers(1, len(points) - 1))
        side = rng.choice([-1.0, 1.0])
        heading = _heading(points[i + 1] - points[i - 1]) + side * math.pi / 2
        heading += rng.normal(0.0, 0.25)
        step = rng.uniform(30.0, 60.0)
        steps = max(2, int(rng.uniform(150.0, 700.0) / step))
        path = _wander(rng, shape, points[i], heading, step, 0.08, steps)
        branches.append(_Road(path, rng.uniform(4.0, 5.5)))
    return branches


def _choose_towns(
    rng: np.random.Generator, shape: tuple[int, int], roads: list[_Road], water: NDArray[np.bool_]
) -> list[_Town]:
    """Town centres on road vertices that are in the scene and on land."""
    candidates: list[tuple[Point, float]] = []
    for road in roads:
        pts = road.points
        for i in range(1, len(pts) - 1):
            r, c = int(pts[i][0]), int(pts[i][1])
            if 0 <= r < shape[0] and 0 <= c < shape[1] and not water[r, c]:
                candidates.append((pts[i], _heading(pts[i + 1] - pts[i - 1])))
    if not candidates:
        candidates = [(np.array([shape[0] / 2.0, shape[1] / 2.0]), 0.0)]
    count = max(1, round(shape[0] * shape[1] / 600.0**2 * rng.uniform(0.6, 1.3)))
    picks = rng.integers(len(candidates), size=count)
    return [_make_town(rng, *candidates[i]) for i in picks]


def _town_streets(rng: np.random.Generator, town: _Town) -> list[_Road]:
    """A rotated, irregular street grid clipped to the town's disc."""
    spacing, width = rng.uniform(38.0, 60.0), rng.uniform(3.0, 4.2)
    streets = []
    for turn, skip_centre in ((0.0, True), (math.pi / 2, False)):
        angle = town.angle + turn
        along = np.array([math.sin(angle), math.cos(angle)])
        across = np.array([along[1], -along[0]])
        reach = int(town.radius // spacing)
        for k in range(-reach, reach + 1):
            offset = k * spacing + rng.normal(0.0, 3.0)
            if (k == 0 and skip_centre) or abs(offset) >= town.radius or rng.random() < 0.15:
                continue
            half = math.sqrt(town.radius**2 - offset**2)
            centre = town.center + offset * across
            ends = (-half * rng.uniform(0.5, 1.0), half * rng.uniform(0.5, 1.0))
            streets.append(_Road(np.array([centre + t * along for t in ends]), width))
    return streets


def _urbanize(cover: _Cover, towns: list[_Town]) -> None:
    """Turn farmland inside towns into gardens and parks: vegetation, natural texture."""
    shape = cover.labels.shape
    for row, col, radius in (blob for town in towns for blob in town.blobs):
        rr, cc = draw.disk((row, col), radius, shape=shape)
        cover.natural[rr, cc] = True
        cover.urban[rr, cc] = True
        ground = cover.labels[rr, cc]
        cover.labels[rr, cc] = np.where(ground == BARE_SOIL, np.uint8(VEGETATION), ground)


def _draw_polyline(mask: NDArray[np.bool_], points: NDArray[np.float64], width: float) -> None:
    """Set the pixels of a thick polyline in `mask` (quads per segment, discs at joints)."""
    radius = width / 2.0
    for p0, p1 in itertools.pairwise(points):
        length = float(np.hypot(*(p1 - p0)))
        if length == 0.0:
            continue
        normal = np.array([p1[1] - p0[1], p0[0] - p1[0]]) * (radius / length)
        corners = np.array([p0 + normal, p1 + normal, p1 - normal, p0 - normal])
        rr, cc = draw.polygon(corners[:, 0], corners[:, 1], shape=mask.shape)
        mask[rr, cc] = True
    for point in points:
        rr, cc = draw.disk((point[0], point[1]), radius, shape=mask.shape)
        mask[rr, cc] = True


def _burn_roads(labels: NDArray[np.uint8], roads: list[_Road]) -> None:
    """Label road pixels, except over water (no bridges)."""
    mask = np.zeros(labels.shape, dtype=bool)
    for road in roads:
        _draw_polyline(mask, road.points, road.width)
    mask &= labels != WATER
    labels[mask] = ROAD


# --------------------------------------------------------------------------
# Buildings
# --------------------------------------------------------------------------

# Roof colours (RGB), how often each occurs, and how often it is gabled.
_ROOF_COLORS = np.array(
    [[168, 80, 60], [188, 108, 72], [200, 200, 194], [168, 170, 168], [78, 80, 88]],
    dtype=np.float32,
)
_ROOF_PROBS = np.array([0.2, 0.15, 0.3, 0.15, 0.2])
_ROOF_GABLED = np.array([1.0, 1.0, 0.15, 0.15, 0.3])
# Building footprints keep 1 px clear of these classes: water, road, building.
_BLOCKS_BUILDING = np.array([True, False, False, True, True])
_SUN = np.array([-1.0, -1.0]) / math.sqrt(2.0)  # light from the north-west


@dataclass(frozen=True)
class _Building:
    """A rasterised building: pixel indices, per-pixel roof colour factor, colour."""

    rows: NDArray[np.intp]
    cols: NDArray[np.intp]
    shade: FloatArray
    color: FloatArray


@dataclass(frozen=True)
class _Footprint:
    """A placed rectangle: its pixels, centre, unit axis and size along and across it."""

    rows: NDArray[np.intp]
    cols: NDArray[np.intp]
    centre: Point
    along: Point
    size: float
    depth: float


@dataclass(frozen=True)
class _Neighbours:
    """How touching neighbours are added: their own random stream and probability."""

    rng: np.random.Generator
    share: float


def _place_buildings(
    rng: np.random.Generator,
    labels: NDArray[np.uint8],
    roads: list[_Road],
    towns: list[_Town],
    neighbours: _Neighbours | None = None,
) -> list[_Building]:
    """Line buildings up along every road segment; label them in `labels`."""
    centres = np.array([t.center for t in towns]).reshape(-1, 2)
    radii = np.array([t.radius for t in towns])
    buildings: list[_Building] = []
    for road in roads:
        for p0, p1 in zip(road.points[:-1], road.points[1:]):
            for spec in _segment_plots(rng, p0, p1, road.width, centres, radii):
                placed = _build(rng, labels, *spec)
                if placed is not None:
                    buildings.append(placed[0])
                    if neighbours is not None:
                        buildings += _attach_neighbours(neighbours, labels, placed[1])
    return buildings


def _instances(shape: tuple[int, int], buildings: list[_Building]) -> NDArray[np.uint32]:
    """Instance ids ``1..N`` in placement order (footprints are disjoint and never empty)."""
    ids = np.zeros(shape, dtype=np.uint32)
    for i, b in enumerate(buildings, start=1):
        ids[b.rows, b.cols] = i
    return ids


def _urban_density(
    points: NDArray[np.float64], centres: NDArray[np.float64], radii: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Probability that a plot is built: high near town centres, low in the countryside."""
    if len(centres) == 0:
        return np.full(len(points), 0.02)
    dist = np.hypot(*(points[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    town = np.clip(1.25 - dist / radii[None, :], 0.0, 1.0).max(axis=1)
    return np.maximum(0.92 * town, 0.02)


def _segment_plots(
    rng: np.random.Generator,
    p0: Point,
    p1: Point,
    road_width: float,
    centres: NDArray[np.float64],
    radii: NDArray[np.float64],
) -> list[tuple[Point, Point, float, float]]:
    """Building plots along both sides of a segment: ``(centre, along, length, depth)``."""
    length = float(np.hypot(*(p1 - p0)))
    pitch = rng.uniform(13.0, 24.0)
    count = int(length // pitch)
    if count == 0:
        return []
    along = (p1 - p0) / length
    across = np.array([along[1], -along[0]])
    fronts = p0 + ((np.arange(count) + 0.5) * pitch)[:, None] * along
    density = _urban_density(fronts, centres, radii)
    plots = []
    for side in (-1.0, 1.0):
        for i in np.flatnonzero(rng.random(count) < density):
            big = rng.random() < 0.08
            size = rng.uniform(0.65, 1.0) * (pitch - 2.5) * (1.6 if big else 1.0)
            depth = rng.uniform(18.0, 30.0) if big else rng.uniform(7.0, 20.0)
            size, depth = float(np.clip(size, 6.0, 30.0)), float(np.clip(depth, 6.0, 30.0))
            offset = road_width / 2.0 + rng.uniform(2.5, 5.5) + depth / 2.0
            plots.append((fronts[i] + side * offset * across, along, size, depth))
    return plots


def _rectangle(
    centre: Point, along: Point, size: float, depth: float, shape: tuple[int, int]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Pixels of a rotated rectangle: `size` along `along`, `depth` across it."""
    across = np.array([along[1], -along[0]])
    a, b = along * (size / 2.0), across * (depth / 2.0)
    corners = np.array([centre + a + b, centre + a - b, centre - a - b, centre - a + b])
    return draw.polygon(corners[:, 0], corners[:, 1], shape=shape)


def _build(
    rng: np.random.Generator,
    labels: NDArray[np.uint8],
    centre: Point,
    along: Point,
    size: float,
    depth: float,
) -> _Building | None:
    """Place one building if its plot is clear; return it and its footprint, or ``None``."""
    aligned = rng.random() < 0.9
    angle = _heading(along) + (rng.normal(0.0, 0.03) if aligned else rng.uniform(0, math.pi))
    along = np.array([math.sin(angle), math.cos(angle)])
    footprint = _free_footprint(labels, centre, along, size, depth)
    if footprint is None:
        return None
    labels[footprint.rows, footprint.cols] = BUILDING
    return _roof(rng, footprint), footprint


def _roof(rng: np.random.Generator, footprint: _Footprint) -> _Building:
    """Roof colour and gable shading of a footprint."""
    rr, cc, centre, along = footprint.rows, footprint.cols, footprint.centre, footprint.along
    kind = int(rng.choice(len(_ROOF_COLORS), p=_ROOF_PROBS))
    tint = rng.normal(0.0, 6.0) + rng.normal(0.0, 3.0, 3)
    color = _ROOF_COLORS[kind] + tint.astype(np.float32)
    shade = np.ones(rr.size, dtype=np.float32)
    if rng.random() < _ROOF_GABLED[kind]:
        across = np.array([along[1], -along[0]])
        side = (rr - centre[0]) * across[0] + (cc - centre[1]) * across[1]
        lit = np.sign(side) * float(across @ _SUN) > 0
        shade = np.where(lit, np.float32(1.1), np.float32(0.86))
    return _Building(rr, cc, shade, color)


def _free_footprint(
    labels: NDArray[np.uint8], centre: Point, along: Point, size: float, depth: float
) -> _Footprint | None:
    """The rectangle, shrunk once if needed to keep 1 px clear of roads, water and
    other buildings; ``None`` if no such footprint of at least 6 x 6 px."""
    for scale in (1.0, 0.65):
        a, b = size * scale, depth * scale
        if min(a, b) < 6.0:
            break
        rr, cc = _rectangle(centre, along, a + 2.0, b + 2.0, labels.shape)
        if rr.size == 0 or _BLOCKS_BUILDING[labels[rr, cc]].any():
            continue
        rr, cc = _rectangle(centre, along, a, b, labels.shape)
        if rr.size >= 12:
            return _Footprint(rr, cc, centre, along, a, b)
    return None


# Touching neighbours: their size relative to the first house, how often a pair
# grows into a terrace of three, and how dark the shared wall (a parapet) is drawn.
_NEIGHBOUR_SIZE = (0.75, 1.15)
_TERRACE = 0.35
_PARTY_WALL_SHADE = 0.72


def _attach_neighbours(
    neighbours: _Neighbours, labels: NDArray[np.uint8], first: _Footprint
) -> list[_Building]:
    """Maybe add houses touching `first` end to end along its street, each sharing a wall."""
    rng = neighbours.rng
    if rng.random() >= neighbours.share:
        return []
    sides = [1.0, -1.0] if rng.random() < 0.5 else [-1.0, 1.0]
    if rng.random() >= _TERRACE:
        sides = sides[:1]
    placed = []
    for side in sides:
        size = first.size * rng.uniform(*_NEIGHBOUR_SIZE)
        footprint = _touching_footprint(labels, first, side, max(size, 6.0))
        if footprint is not None:
            labels[footprint.rows, footprint.cols] = BUILDING
            placed.append(_party_wall(_roof(rng, footprint), first, labels.shape))
    return placed


def _touching_footprint(
    labels: NDArray[np.uint8], first: _Footprint, side: float, size: float
) -> _Footprint | None:
    """A rectangle of `size` x ``first.depth`` sharing `first`'s end wall on `side`.

    It is drawn 1 px into `first` and `first`'s pixels are removed, so the two
    tile the union without a gap. ``None`` unless its plot keeps 1 px clear of
    everything but `first` and it is one 4-connected region of >= 12 px.
    """
    shape = labels.shape
    centre = first.centre + side * first.along * ((first.size + size) / 2.0)
    inner = centre - side * first.along * 0.5  # 1 px longer, reaching into `first`
    own = _flat(first.rows, first.cols, shape)
    rr, cc = _rectangle(inner, first.along, size + 3.0, first.depth + 2.0, shape)
    keep = ~np.isin(_flat(rr, cc, shape), own)
    if rr.size == 0 or _BLOCKS_BUILDING[labels[rr[keep], cc[keep]]].any():
        return None
    rr, cc = _rectangle(inner, first.along, size + 1.0, first.depth, shape)
    keep = ~np.isin(_flat(rr, cc, shape), own)
    rr, cc = rr[keep], cc[keep]
    if rr.size < 12 or not _one_region(rr, cc):
        return None
    return _Footprint(rr, cc, centre, first.along, size, first.depth)


def _one_region(rows: NDArray[np.intp], cols: NDArray[np.intp]) -> bool:
    """Whether pixels form a single 4-connected region."""
    r0, c0 = rows.min(), cols.min()
    mask = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), dtype=bool)
    mask[rows - r0, cols - c0] = True
    return ndimage.label(mask)[1] == 1


def _flat(
    rows: NDArray[np.intp], cols: NDArray[np.intp], shape: tuple[int, int]
) -> NDArray[np.intp]:
    """Flat indices of pixels."""
    return rows * shape[1] + cols


def _party_wall(building: _Building, first: _Footprint, shape: tuple[int, int]) -> _Building:
    """Darken the pixels of `building` that are 4-adjacent to `first`: the shared wall."""
    own = _flat(first.rows, first.cols, shape)
    rr, cc = building.rows, building.cols
    wall = np.zeros(rr.size, dtype=bool)
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = np.clip(rr + dr, 0, shape[0] - 1), np.clip(cc + dc, 0, shape[1] - 1)
        wall |= np.isin(_flat(r, c, shape), own)
    shade = np.where(wall, building.shade * np.float32(_PARTY_WALL_SHADE), building.shade)
    return _Building(building.rows, building.cols, shade.astype(np.float32), building.color)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

_WATER_DEEP = np.array([20, 46, 66], dtype=np.float32)
_WATER_SHALLOW = np.array([46, 88, 92], dtype=np.float32)
_CROPS = np.array(
    [[58, 92, 42], [76, 112, 48], [96, 126, 56], [64, 102, 62], [104, 132, 64], [48, 82, 44]],
    dtype=np.float32,
)
_FOREST = np.array([34, 62, 36], dtype=np.float32)
_GRASS = np.array([86, 110, 60], dtype=np.float32)
_SOILS = np.array(
    [[152, 118, 78], [168, 136, 92], [128, 98, 66], [182, 154, 108], [140, 110, 72]],
    dtype=np.float32,
)
_DRY_SOIL = np.array([178, 152, 114], dtype=np.float32)
_ASPHALT = np.array([118, 118, 116], dtype=np.float32)
_HAZE = np.array([186, 192, 204], dtype=np.float32)
_SENSOR_SIGMA = 5.0


@dataclass(frozen=True)
class _Textures:
    """Shared unit-variance texture fields (classes are disjoint, so reuse is invisible)."""

    fine: FloatArray
    small: FloatArray
    mid: FloatArray
    coarse: FloatArray
    streaks: tuple[FloatArray, FloatArray]


def _textures(rng: np.random.Generator, shape: tuple[int, int]) -> _Textures:
    """Generate the texture fields for a scene."""
    return _Textures(
        fine=_smooth_noise(rng, shape, 1.6),
        small=_smooth_noise(rng, shape, 4.0),
        mid=_smooth_noise(rng, shape, 24.0),
        coarse=_smooth_noise(rng, shape, 110.0),
        streaks=(_streak_noise(rng, shape, 0), _streak_noise(rng, shape, 1)),
    )


def _render(
    rng: np.random.Generator, cover: _Cover, buildings: list[_Building]
) -> NDArray[np.uint8]:
    """Turn the layout into a ``uint8`` RGB image."""
    labels = cover.labels
    tex = _textures(rng, labels.shape)
    image = np.empty((3,) + labels.shape, dtype=np.float32)
    flat_labels = labels.reshape(-1)
    where = {k: np.flatnonzero(flat_labels == k) for k in (WATER, VEGETATION, BARE_SOIL, ROAD)}
    _paint_water(image, labels == WATER, where[WATER], tex)
    _paint_vegetation(rng, image, where[VEGETATION], cover, tex)
    _paint_soil(rng, image, where[BARE_SOIL], cover, tex)
    _paint_roads(image, where[ROAD], tex)
    del where
    for b in buildings:
        grain = 1.0 + 0.03 * tex.fine[b.rows, b.cols]
        image[:, b.rows, b.cols] = b.color[:, None] * (b.shade * grain)[None, :]
    _cast_shadows(image, labels == BUILDING)
    del tex
    return _finish(rng, image)


def _at(field: np.ndarray, idx: NDArray[np.intp]) -> np.ndarray:
    """Values of a 2-D `field` at flat pixel indices `idx`."""
    return field.reshape(-1)[idx]


def _put(image: FloatArray, idx: NDArray[np.intp], values: FloatArray) -> None:
    """Write ``(3, N)`` `values` into `image` at flat pixel indices `idx`."""
    flat = image.reshape(3, -1)
    for band in range(3):
        flat[band, idx] = values[band]


def _paint_water(
    image: FloatArray, mask: NDArray[np.bool_], idx: NDArray[np.intp], tex: _Textures
) -> None:
    """Dark blue-teal water, shallower and greener near the shore."""
    if idx.size == 0:
        return
    inland = _at(ndimage.gaussian_filter(mask.astype(np.float32), sigma=3.0, truncate=2.5), idx)
    shallow = np.clip(2.0 * (1.0 - inland), 0.0, 1.0)
    mix = np.clip(0.65 * shallow + 0.2 * (_at(tex.coarse, idx) + 1.0), 0.0, 1.0)
    color = _WATER_DEEP[:, None] + mix[None, :] * (_WATER_SHALLOW - _WATER_DEEP)[:, None]
    _put(image, idx, color * (1.0 + 0.03 * _at(tex.fine, idx))[None, :])


def _parcel_streaks(
    rng: np.random.Generator,
    idx: NDArray[np.intp],
    parcels: NDArray[np.int32],
    count: int,
    tex: _Textures,
) -> FloatArray:
    """Streaks with a direction and strength chosen per parcel, at pixels `idx`."""
    vertical = rng.random(count) < 0.5
    strength = rng.uniform(0.0, 1.0, count).astype(np.float32)
    streaks = np.where(vertical[parcels], _at(tex.streaks[0], idx), _at(tex.streaks[1], idx))
    return streaks * strength[parcels]


def _parcel_colors(
    rng: np.random.Generator, palette: FloatArray, count: int, jitter: float
) -> FloatArray:
    """A colour per parcel: a palette entry plus a little jitter, as ``(3, count)``."""
    picks = rng.integers(len(palette), size=count)
    return (palette[picks] + rng.normal(0.0, jitter, (count, 3)).astype(np.float32)).T


def _fields(
    rng: np.random.Generator,
    palette: FloatArray,
    idx: NDArray[np.intp],
    cover: _Cover,
    tex: _Textures,
) -> tuple[FloatArray, NDArray[np.intp], FloatArray, NDArray[np.bool_]]:
    """At the pixels ``idx``: a colour per parcel from ``palette``, the parcel of each pixel,
    its furrow streaks and whether it is natural ground (drawn from ``rng`` in that order)."""
    colors = _parcel_colors(rng, palette, cover.n_parcels, 5.0)
    parcels = _at(cover.parcels, idx)
    streaks = _parcel_streaks(rng, idx, parcels, cover.n_parcels, tex)
    return colors, parcels, streaks, _at(cover.natural, idx)


def _paint_vegetation(
    rng: np.random.Generator,
    image: FloatArray,
    idx: NDArray[np.intp],
    cover: _Cover,
    tex: _Textures,
) -> None:
    """Crop parcels in farmland; forest canopy and grass in natural areas; lawns in towns."""
    crops, parcels, streaks, natural = _fields(rng, _CROPS, idx, cover, tex)
    forest = np.clip(0.55 + 0.7 * _at(tex.coarse, idx), 0.0, 1.0)
    forest *= np.where(_at(cover.urban, idx), np.float32(0.35), np.float32(1.0))  # lawns, few trees
    wild = _GRASS[:, None] + forest[None, :] * (_FOREST - _GRASS)[:, None]
    base = np.where(natural[None, :], wild, crops[:, parcels])
    fine = _at(tex.fine, idx)
    farm_grain = 0.05 * streaks + 0.04 * fine
    wild_grain = forest * (0.22 * _at(tex.small, idx) + 0.1 * fine) + (1.0 - forest) * 0.06 * fine
    grain = 1.0 + 0.05 * _at(tex.mid, idx) + np.where(natural, wild_grain, farm_grain)
    _put(image, idx, base * grain[None, :])


def _paint_soil(
    rng: np.random.Generator,
    image: FloatArray,
    idx: NDArray[np.intp],
    cover: _Cover,
    tex: _Textures,
) -> None:
    """Ploughed brown parcels with furrows; mottled tan bare ground elsewhere."""
    soils, parcels, streaks, natural = _fields(rng, _SOILS, idx, cover, tex)
    base = np.where(natural[None, :], _DRY_SOIL[:, None], soils[:, parcels])
    fine = _at(tex.fine, idx)
    farm_grain = 0.08 * streaks + 0.03 * fine
    wild_grain = 0.06 * _at(tex.small, idx) + 0.05 * fine + 0.05 * _at(tex.coarse, idx)
    grain = 1.0 + 0.06 * _at(tex.mid, idx) + np.where(natural, wild_grain, farm_grain)
    _put(image, idx, base * grain[None, :])


def _paint_roads(image: FloatArray, idx: NDArray[np.intp], tex: _Textures) -> None:
    """Grey asphalt with slight wear."""
    grain = 1.0 + 0.05 * _at(tex.mid, idx) + 0.04 * _at(tex.fine, idx)
    _put(image, idx, _ASPHALT[:, None] * grain[None, :])


def _cast_shadows(image: FloatArray, buildings: NDArray[np.bool_]) -> None:
    """Darken the ground 1-2 px south-east of buildings (sun in the north-west)."""
    shadow = np.zeros_like(buildings)
    shadow[1:, 1:] |= buildings[:-1, :-1]
    shadow[2:, 2:] |= buildings[:-2, :-2]
    shadow[2:, 1:] |= buildings[:-2, :-1]
    shadow &= ~buildings
    image[:, shadow] *= np.float32(0.6)


def _finish(rng: np.random.Generator, image: FloatArray) -> NDArray[np.uint8]:
    """Optics blur, haze gradient, brightness drift, sensor noise, quantisation."""
    shape = image.shape[1:]
    angle = rng.uniform(0.0, 2.0 * math.pi)
    yy = np.linspace(0.0, math.sin(angle), shape[0], dtype=np.float32)[:, None]
    xx = np.linspace(0.0, math.cos(angle), shape[1], dtype=np.float32)[None, :]
    ramp = yy + xx
    ramp -= ramp.min()
    ramp /= max(float(ramp.max()), 1e-6)
    haze = np.clip(0.03 + 0.09 * ramp + 0.02 * _smooth_noise(rng, shape, 200.0), 0.0, 0.3)
    gain = 1.0 + 0.04 * _smooth_noise(rng, shape, 150.0)
    out = np.empty(image.shape, dtype=np.uint8)
    for band in range(3):
        value = ndimage.gaussian_filter(image[band], sigma=0.55, truncate=2.0)
        value *= gain * (1.0 - haze)
        value += haze * _HAZE[band]
        value += rng.standard_normal(shape, dtype=np.float32) * np.float32(_SENSOR_SIGMA)
        np.clip(value, 1.0, 255.0, out=value)
        np.rint(value, out=value)
        out[band] = value
    return out
