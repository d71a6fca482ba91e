"""Synthetic, MRI-like abdominal volumes with ground truth.

A volume is an axial stack through a torso, built from one random stream for
the anatomy and one for the rendering, both derived from the seed, so a seed
always gives the same volume:

1. anatomy, drawn in millimetres on a smoothly warped grid (shapes are round
   in mm, so an organ spans fewer slices than columns when the slices are
   thicker than the pixels):

   - the body: an ellipsoid with a subcutaneous fat layer, a thin muscular
     wall and, inside, a mottled mix of visceral fat and soft tissue; dark air
     around it;
   - background anatomy: a spine (vertebral bodies with cortex, discs,
     canal, spinous process), paraspinal muscles, the aorta and vena cava, and
     bowel loops with gas pockets in the anterior abdomen;
   - ``organ_a`` (liver-like): a large smooth lobed blob (a sum of gaussians,
     thresholded) in the patient's right upper abdomen;
   - ``organ_b`` (kidney-like): a bean-shaped pair, posterior, beside the
     spine, each with a bright cortex and a darker medulla;
   - ``lesion``: one to four small irregular blobs inside ``organ_a``, all
     darker (most volumes) or all brighter than the organ;

2. rendering: class-specific T1-like intensities with smooth texture, a
   smooth multiplicative bias field (exponential of a quadratic polynomial), a
   slight blur (partial volume, wider along z) and Rician noise.

Every random field that shapes the anatomy is defined on a node grid in
millimetres, so two volumes of the same seed and field of view (e.g.
``48 x 96 x 96`` at 2.5 mm slices and ``120 x 96 x 96`` at 1 mm) show the same
organs, up to the lesions' sizes and sampling.

Orientation
-----------
Arrays are ``(z, y, x)`` = ``(slice, row, column)``. A slice shown with row 0
on top reads like a radiological axial view: anterior up, the patient's right
on the viewer's left; slices go from inferior to superior. `Volume.affine` is
NIfTI-style, mapping ``(x, y, z, 1)`` indices (column, row, slice: the reverse
of the array order) to RAS+ millimetres, with diagonal
``(-spacing_x, -spacing_y, +spacing_z)`` and the volume centred on the world
origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from geoseg.core.classes import ClassInfo
from geoseg.errors import ParameterError

__all__ = ["VOLUME_CLASSES", "Volume", "make_volume"]

BACKGROUND, ORGAN_A, ORGAN_B, LESION = range(4)

MIN_SIZE = 8
DEFAULT_SPACING = (2.5, 1.0, 1.0)

FloatArray = NDArray[np.float32]
Slices = tuple[slice, slice, slice]

VOLUME_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo("background", (0, 0, 0)),
    ClassInfo("organ_a", (222, 125, 60)),  # liver-like
    ClassInfo("organ_b", (60, 140, 220)),  # kidney-like
    ClassInfo("lesion", (230, 30, 40)),
)

# Tissues: what gets rendered. Each maps to a class, an intensity and a
# texture amplitude (relative intensity variation).
(
    AIR,
    FAT,
    MUSCLE,
    BOWEL,
    GAS,
    BONE_CORTEX,
    MARROW,
    DISC,
    CSF,
    VESSEL,
    LIVER,
    KIDNEY_CORTEX,
    KIDNEY_MEDULLA,
    LESION_TISSUE,
) = range(14)

_TISSUE_CLASS = np.array([0] * 10 + [ORGAN_A, ORGAN_B, ORGAN_B, LESION], dtype=np.uint8)
_TISSUE_INTENSITY = np.array(
    [0.0, 0.50, 0.28, 0.40, 0.05, 0.18, 0.75, 0.42, 0.12, 0.14, 0.62, 0.92, 0.74, 0.62],
    dtype=np.float32,
)
_TISSUE_TEXTURE = np.array(
    [0.0, 0.05, 0.07, 0.20, 0.30, 0.10, 0.06, 0.05, 0.05, 0.10, 0.03, 0.04, 0.05, 0.08],
    dtype=np.float32,
)
_GAUSS_LEVEL = math.exp(-0.5)  # a single gaussian blob's boundary: one semi-axis out


@dataclass(frozen=True, eq=False)
class Volume:
    """A synthetic volume: image, ground truth and voxel geometry.

    Attributes
    ----------
    image : numpy.ndarray
        ``float32`` array of shape ``(1, Z, Y, X)``: one MRI-like channel,
        about ``0`` in air and ``0.1..1.5`` in tissue (arbitrary units).
    labels : numpy.ndarray
        ``uint8`` array of shape ``(Z, Y, X)`` with class ids ``0..3``
        indexing `classes`.
    spacing : tuple of float
        Voxel size in millimetres, ``(z, y, x)``.
    affine : numpy.ndarray
        ``float64`` ``4 x 4`` NIfTI-style affine from ``(x, y, z, 1)`` voxel
        indices (reverse array order) to RAS+ millimetres; its diagonal is
        ``(-spacing[2], -spacing[1], spacing[0], 1)`` (see the module notes).
    classes : tuple of ClassInfo
        The classes, in id order.
    """

    image: FloatArray
    labels: NDArray[np.uint8]
    spacing: tuple[float, float, float]
    affine: NDArray[np.float64]
    classes: tuple[ClassInfo, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(int(n) for n in self.labels.shape)  # type: ignore[return-value]


def make_volume(
    depth: int,
    height: int,
    width: int,
    *,
    seed: int = 0,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> Volume:
    """Generate a synthetic abdominal MRI-like volume with ground truth.

    Parameters
    ----------
    depth, height, width : int
        Volume size in voxels ``(Z, Y, X)``, each at least 8.
    seed : int, optional
        Non-negative seed; the same seed gives the same volume.
    spacing : tuple of float, optional
        Voxel size in millimetres ``(z, y, x)``; organs are sized relative to
        the in-plane field of view and drawn round in millimetres.

    Returns
    -------
    Volume
        The image, labels, spacing and affine.

    Raises
    ------
    ValueError
        If a size is below 8, the seed is negative or a spacing is not a
        positive finite number.
    """
    shape, spacing = _check_args((depth, height, width), seed, spacing)
    anatomy_rng, render_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    grid = _Grid.make(shape, spacing)
    tissue, lesion_factor = _anatomy(anatomy_rng, grid)
    image = _render(render_rng, grid, tissue, lesion_factor)
    return Volume(
        image=image[None],
        labels=_TISSUE_CLASS[tissue],
        spacing=spacing,
        affine=_affine(shape, spacing),
        classes=VOLUME_CLASSES,
    )


def _check_args(
    shape: tuple[int, int, int], seed: int, spacing: tuple[float, float, float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Validate the arguments of `make_volume`; return the shape and spacing."""
    if any(int(n) != n for n in shape):
        raise ParameterError(f"depth, height and width must be integers, got {shape!r}")
    if min(shape) < MIN_SIZE:
        raise ParameterError(f"volume size {shape} is too small: every axis must be >= {MIN_SIZE}")
    if int(seed) != seed or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ParameterError(f"spacing must be three positive millimetre sizes, got {spacing!r}")
    return tuple(int(n) for n in shape), values  # type: ignore[return-value]


def _affine(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> NDArray[np.float64]:
    """Affine from ``(x, y, z)`` indices to RAS+ mm, centred on the origin.

    Column index grows towards the patient's left (``-R``), row index towards
    posterior (``-A``), slice index towards superior (``+S``).
    """
    sz, sy, sx = spacing
    nz, ny, nx = shape
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * (nx - 1) / 2.0, sy * (ny - 1) / 2.0, -sz * (nz - 1) / 2.0]
    return affine


# --------------------------------------------------------------------------
# Grid and random fields in millimetres
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in mm ``(z, y, x)``, centred on the volume."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axes: tuple[FloatArray, FloatArray, FloatArray]
    fov: tuple[float, float, float]
    unit: float  # the in-plane field of view (mm) that organ sizes scale with

    @classmethod
    def make(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> _Grid:
        fov = tuple(n * s for n, s in zip(shape, spacing))
        axes = tuple(
            ((np.arange(n, dtype=np.float64) + 0.5) * s - f / 2.0).astype(np.float32)
            for n, s, f in zip(shape, spacing, fov)
        )
        return cls(shape, spacing, axes, fov, min(fov[1], fov[2]))  # type: ignore[arg-type]

    def box(self, lo: NDArray[np.float64], hi: NDArray[np.float64]) -> Slices:
        """Index slices of the voxels whose centres lie in ``[lo, hi]`` mm (maybe empty)."""
        return tuple(
            slice(int(np.searchsorted(a, l)), int(np.searchsorted(a, h, side="right")))
            for a, l, h in zip(self.axes, lo, hi)
        )  # type: ignore[return-value]


@dataclass(frozen=True)
class _Noise:
    """Unit-variance smooth random field: gaussian interpolation of nodes `cell` mm apart.

    The nodes cover the field of view plus a margin, from a position fixed by
    the field of view, so the field does not depend on the voxel grid. Each
    position mixes its `TAPS` nearest nodes per axis; this is done with
    gathers rather than matrix products, which stay fast on busy cores where
    a multi-threaded BLAS can stall.
    """

    low: FloatArray
    start: NDArray[np.float64]
    cell: float

    TAPS = 6

    @classmethod
    def make(cls, rng: np.random.Generator, fov: tuple[float, float, float], cell: float) -> _Noise:
        counts = tuple(math.ceil(f / cell) + 7 for f in fov)
        start = -np.asarray(fov) / 2.0 - (3.0 - rng.random(3)) * cell
        return cls(rng.standard_normal(counts, dtype=np.float32), start, float(cell))

    def _taps(self, axis: int, pos: np.ndarray) -> tuple[NDArray[np.intp], FloatArray]:
        """Node indices and weights ``(len(pos), TAPS)``; weights have unit L2 norm per row."""
        rel = (np.asarray(pos, dtype=np.float64) - self.start[axis]) / self.cell
        first = np.floor(rel).astype(np.intp) - (self.TAPS // 2 - 1)
        index = first[:, None] + np.arange(self.TAPS)[None, :]
        dist = (rel[:, None] - index) / 0.75
        weights = np.exp(-0.5 * dist * dist)
        weights /= np.sqrt((weights * weights).sum(axis=1, keepdims=True))
        return np.clip(index, 0, self.low.shape[axis] - 1), weights.astype(np.float32)

    def grid(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> FloatArray:
        """The field on the grid spanned by 1D coordinate `axes`, shape ``(Z, Y, X)``."""
        field = self.low
        for axis in (0, 2, 1):  # the largest intermediate arrays come last
            index, weights = self._taps(axis, axes[axis])
            shape = [1, 1, 1]
            shape[axis] = -1
            out = np.take(field, index[:, 0], axis=axis)
            out *= weights[:, 0].reshape(shape)
            for tap in range(1, self.TAPS):
                part = np.take(field, index[:, tap], axis=axis)
                part *= weights[:, tap].reshape(shape)
                out += part
            field = out
        return field

    def at(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """The field at scattered ``(n, 3)`` points."""
        (iz, wz), (iy, wy), (ix, wx) = (self._taps(i, points[:, i]) for i in range(3))
        values = self.low[iz[:, :, None, None], iy[:, None, :, None], ix[:, None, None, :]]
        weights = wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]
        return (values.astype(np.float64) * weights).sum(axis=(1, 2, 3))


@dataclass(frozen=True)
class _Warp:
    """A smooth displacement field (mm), one `_Noise` per axis."""

    fields: tuple[_Noise, _Noise, _Noise]  # z, y, x
    amplitude: float  # mm

    @classmethod
    def make(cls, rng: np.random.Generator, grid: _Grid) -> _Warp:
        fields = tuple(_Noise.make(rng, grid.fov, 0.18 * grid.unit) for _ in range(3))
        return cls(fields, 0.03 * grid.unit)  # type: ignore[arg-type]

    def max_shift(self) -> float:
        """A bound on the displacement along any axis (5 sigma)."""
        return 5.0 * self.amplitude

    def grid(self, grid: _Grid) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Warped coordinates ``(z, y, x)`` of every voxel, each ``(Z, Y, X)``."""
        out = []
        for axis, noise in enumerate(self.fields):
            coord = noise.grid(grid.axes)
            coord *= np.float32(self.amplitude)
            coord += grid.axes[axis].reshape([-1 if i == axis else 1 for i in range(3)])
            out.append(coord)
        return out[0], out[1], out[2]

    def at(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Warped positions of scattered ``(n, 3)`` points."""
        out = points.astype(np.float64).copy()
        for axis, noise in enumerate(self.fields):
            out[:, axis] += self.amplitude * noise.at(points)
        return out


# --------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    """A sum of anisotropic gaussians in an in-plane rotated frame.

    ``field >= level`` is the shape; with one gaussian of weight 1 and the
    default level, that is the ellipsoid with semi-axes ``semi``.
    """

    pivot: NDArray[np.float64]  # (3,) frame origin, mm (z, y, x)
    angle: float  # in-plane rotation of the frame, radians
    centers: NDArray[np.float64]  # (k, 3) in the frame
    semi: NDArray[np.float64]  # (k, 3)
    weights: NDArray[np.float64]  # (k,)
    level: float = _GAUSS_LEVEL

    def field(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The blob field at (warped) coordinates, any broadcastable shapes."""
        pz, py, px = self.pivot.tolist()  # Python floats keep float32 inputs float32
        dz, dy, dx = z - pz, y - py, x - px
        c, s = math.cos(self.angle), math.sin(self.angle)
        fy, fx = c * dy + s * dx, c * dx - s * dy
        total = np.zeros(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), np.float32)
        balls = zip(self.centers.tolist(), self.semi.tolist(), self.weights.tolist())
        for center, semi, weight in balls:
            d2 = _squared_norm((dz, fy, fx), center, semi)
            d2 *= -0.5
            np.exp(d2, out=d2)
            d2 *= weight
            total += d2
        return total

    def bounds(self, margin: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """A ``(lo, hi)`` mm box around the blob (positive gaussians out to 1.5 semi-axes)."""
        positive = self.weights > 0
        reach = np.abs(self.centers[positive]) + 1.5 * self.semi[positive]
        radius = float(np.hypot(reach[:, 1], reach[:, 2]).max())
        extent = np.array([float(reach[:, 0].max()), radius, radius]) + margin
        return self.pivot - extent, self.pivot + extent


def _blob(
    pivot: tuple[float, float, float],
    angle: float,
    balls: list[tuple[tuple[float, float, float], tuple[float, float, float], float]],
) -> _Blob:
    """A `_Blob` from ``(center, semi_axes, weight)`` triples."""
    return _Blob(
        pivot=np.asarray(pivot, dtype=np.float64),
        angle=float(angle),
        centers=np.array([b[0] for b in balls], dtype=np.float64),
        semi=np.array([b[1] for b in balls], dtype=np.float64),
        weights=np.array([b[2] for b in balls], dtype=np.float64),
    )


@dataclass(frozen=True)
class _Body:
    """The body ellipsoid: centre and semi-axes (mm), fat and wall thickness (fraction)."""

    center: NDArray[np.float64]
    semi: NDArray[np.float64]
    fat: float
    wall: float

    def radius(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> FloatArray:
        """Normalised ellipsoidal radius (``< 1`` inside the body)."""
        r2 = _squared_norm((z, y, x), self.center.tolist(), self.semi.tolist())
        return np.sqrt(r2, out=r2)


def _squared_norm(
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    center: list[float] | tuple[float, ...],
    semi: list[float] | tuple[float, ...],
) -> np.ndarray:
    """``sum(((coords - center) / semi) ** 2)`` over the three axes, in a new array."""
    total = None
    for coord, c, a in zip(coords, center, semi):
        term = coord - c
        term *= 1.0 / a
        term *= term
        if total is None:
            total = term
        elif total.shape == term.shape:
            total += term
        else:
            total = total + term
    return total


# --------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where everything goes, in mm ``(z, y, x)``."""

    body: _Body
    spine: NDArray[np.float64]  # (y, x) centre of the vertebral bodies
    liver: _Blob
    kidneys: tuple[_Blob, _Blob]


def _anatomy(rng: np.random.Generator, grid: _Grid) -> tuple[NDArray[np.uint8], float]:
    """The tissue map, and the lesions' intensity relative to the liver."""
    warp = _Warp.make(rng, grid)
    warped = warp.grid(grid)
    margin = warp.max_shift()
    layout = _layout(rng, grid)
    radius = layout.body.radius(*_half_warped(grid, warped))  # keeps the outline off the edges
    tissue = _body_tissue(rng, grid, layout.body, radius)
    inner = radius < 1.0 - layout.body.fat - layout.body.wall
    del radius
    _bowel(rng, grid, layout, tissue, inner)
    _spine(rng, grid, layout, tissue, warped, margin)
    keep = (BONE_CORTEX, MARROW, DISC, CSF, VESSEL)
    _paint_blob(grid, tissue, layout.liver, warped, margin, LIVER, inner, keep)
    for kidney in layout.kidneys:
        _paint_kidney(grid, tissue, kidney, warped, margin, inner)
    liver = ndimage.binary_erosion(tissue == LIVER)  # keeps a rim of liver around lesions
    for lesion in _lesions(rng, grid, warp, layout):
        _paint_blob(grid, tissue, lesion, warped, margin, LESION_TISSUE, liver, ())
    dark = rng.random() < 0.7
    factor = rng.uniform(0.45, 0.6) if dark else rng.uniform(1.35, 1.45)
    return tissue, float(factor)


def _half_warped(
    grid: _Grid, warped: tuple[FloatArray, FloatArray, FloatArray]
) -> list[FloatArray]:
    """Coordinates displaced by half the warp."""
    out = []
    for axis, (coord, line) in enumerate(zip(warped, grid.axes)):
        half = coord + line.reshape([-1 if i == axis else 1 for i in range(3)])
        half *= np.float32(0.5)
        out.append(half)
    return out


def _layout(rng: np.random.Generator, grid: _Grid) -> _Layout:
    """Random body size and organ placement, relative to the field of view."""
    fz, fy, fx = grid.fov
    u = grid.unit
    body = _Body(
        center=np.array([0.0, rng.uniform(-0.02, 0.03) * fy, rng.uniform(-0.01, 0.01) * fx]),
        semi=np.array(
            [
                rng.uniform(0.7, 0.9) * max(fz, u),
                rng.uniform(0.31, 0.36) * fy,
                rng.uniform(0.4, 0.44) * fx,
            ]
        ),
        fat=rng.uniform(0.06, 0.12),
        wall=rng.uniform(0.025, 0.04),
    )
    cy, cx = body.center[1:].tolist()
    by, bx = body.semi[1:].tolist()
    spine_y = cy + rng.uniform(0.55, 0.62) * by
    spine_x = cx + rng.uniform(-0.03, 0.03) * bx
    z_lim = 0.28 * fz  # keeps the organs' centres in the field of view
    liver_z = float(np.clip(rng.uniform(0.0, 0.1) * u, -z_lim, z_lim))
    kidney_z = float(np.clip(liver_z - rng.uniform(0.07, 0.12) * u, -z_lim, z_lim))
    liver_y = cy + rng.uniform(-0.15, 0.0) * by
    liver_x = cx - rng.uniform(0.38, 0.46) * bx  # the patient's right
    liver = _liver(rng, u, (liver_z, liver_y, liver_x))
    kidneys = []
    for side in (-1, 1):  # right (lower), left
        z = kidney_z - (0.03 * u if side < 0 else 0.0)
        y = spine_y - rng.uniform(0.05, 0.12) * by
        x = spine_x + side * rng.uniform(0.36, 0.44) * bx
        kidneys.append(_kidney(rng, u, side, (z, y, x)))
    return _Layout(body, np.array([spine_y, spine_x]), liver, (kidneys[0], kidneys[1]))


def _liver(rng: np.random.Generator, u: float, pivot: tuple[float, float, float]) -> _Blob:
    """A large right lobe, a flatter left lobe reaching across the midline, a dome."""
    main = (
        (0.0, 0.0, 0.0),
        (rng.uniform(0.17, 0.21) * u, rng.uniform(0.19, 0.23) * u, rng.uniform(0.15, 0.18) * u),
        1.0,
    )
    left = (
        (rng.uniform(0.02, 0.06) * u, -rng.uniform(0.06, 0.1) * u, rng.uniform(0.17, 0.23) * u),
        (rng.uniform(0.09, 0.12) * u, rng.uniform(0.08, 0.1) * u, rng.uniform(0.12, 0.15) * u),
        rng.uniform(0.8, 1.0),
    )
    dome = ((0.07 * u, 0.07 * u, -0.03 * u), (0.14 * u, 0.15 * u, 0.12 * u), rng.uniform(0.6, 0.8))
    return _blob(pivot, rng.uniform(-0.3, 0.3), [main, left, dome])


def _kidney(
    rng: np.random.Generator, u: float, side: int, pivot: tuple[float, float, float]
) -> _Blob:
    """A bean: an ellipsoid with a notch (negative gaussian) at the medial hilum."""
    semi = (
        rng.uniform(0.14, 0.17) * u,
        rng.uniform(0.08, 0.09) * u,
        rng.uniform(0.065, 0.075) * u,
    )
    main = ((0.0, 0.0, 0.0), semi, 1.0)
    hilum = ((0.0, -0.01 * u, -side * 0.07 * u), (0.055 * u, 0.032 * u, 0.032 * u), -0.9)
    return _blob(pivot, side * rng.uniform(0.3, 0.6), [main, hilum])


def _body_tissue(
    rng: np.random.Generator, grid: _Grid, body: _Body, radius: FloatArray
) -> NDArray[np.uint8]:
    """Air outside, then fat, a muscular wall and a fat/soft-tissue mix inside."""
    mix = _Noise.make(rng, grid.fov, 0.07 * grid.unit).grid(grid.axes)
    inner = np.where(mix > rng.uniform(-0.2, 0.4), np.uint8(FAT), np.uint8(MUSCLE))
    del mix
    tissue = np.full(grid.shape, AIR, dtype=np.uint8)
    tissue[radius < 1.0] = FAT
    tissue[radius < 1.0 - body.fat] = MUSCLE
    interior = radius < 1.0 - body.fat - body.wall
    tissue[interior] = inner[interior]
    return tissue


def _bowel(
    rng: np.random.Generator,
    grid: _Grid,
    layout: _Layout,
    tissue: NDArray[np.uint8],
    inner: NDArray[np.bool_],
) -> None:
    """Bowel loops with gas pockets, in the anterior abdomen away from the liver."""
    loops = _Noise.make(rng, grid.fov, 0.09 * grid.unit).grid(grid.axes)
    gas = _Noise.make(rng, grid.fov, 0.025 * grid.unit).grid(grid.axes)
    cy, cx = layout.body.center[1:].tolist()
    by, bx = layout.body.semi[1:].tolist()
    y = (grid.axes[1][None, :, None] - cy) / by
    x = (grid.axes[2][None, None, :] - (cx + 0.25 * bx)) / bx
    anterior = np.exp(-2.0 * ((y + 0.35) ** 2 + x**2)).astype(np.float32)
    bowel = inner & (loops + 1.5 * anterior > 1.3)
    tissue[bowel] = BOWEL
    tissue[bowel & (gas > 1.5)] = GAS


def _spine(
    rng: np.random.Generator,
    grid: _Grid,
    layout: _Layout,
    tissue: NDArray[np.uint8],
    warped: tuple[FloatArray, FloatArray, FloatArray],
    margin: float,
) -> None:
    """Paraspinal muscles, vertebrae with discs and canal, aorta and vena cava (tubes along z)."""
    u = grid.unit
    sy, sx = layout.spine.tolist()

    def tube(center: tuple[float, float], semi: tuple[float, float], code: int) -> None:
        box, inside = _tube(grid, warped, center, semi, margin)
        sub = tissue[box]
        sub[inside & (sub != AIR)] = code

    for side in (-1, 1):
        tube((sy + 0.1 * u, sx + side * 0.085 * u), (0.065 * u, 0.06 * u), MUSCLE)
        tube((sy - 0.01 * u, sx + side * 0.075 * u), (0.035 * u, 0.028 * u), MUSCLE)
    semi = (rng.uniform(0.045, 0.055) * u, rng.uniform(0.055, 0.065) * u)
    tube((sy, sx), semi, BONE_CORTEX)
    tube((sy, sx), (0.8 * semi[0], 0.8 * semi[1]), MARROW)
    box, inside = _tube(grid, warped, (sy, sx), (0.95 * semi[0], 0.95 * semi[1]), margin)
    period = rng.uniform(0.085, 0.1) * u
    phase = (warped[0][box] / np.float32(period) - np.float32(rng.random())) % np.float32(1.0)
    tissue[box][inside & (phase < 0.22)] = DISC
    tube((sy + 0.12 * u, sx), (0.045 * u, 0.018 * u), MARROW)
    tube((sy + semi[0] + 0.02 * u, sx), (0.022 * u, 0.022 * u), CSF)
    tube((sy - semi[0] - 0.035 * u, sx + 0.03 * u), (0.025 * u, 0.025 * u), VESSEL)
    tube((sy - semi[0] - 0.04 * u, sx - 0.07 * u), (0.022 * u, 0.03 * u), VESSEL)


def _tube(
    grid: _Grid,
    warped: tuple[FloatArray, FloatArray, FloatArray],
    center: tuple[float, float],
    semi: tuple[float, float],
    margin: float,
) -> tuple[Slices, NDArray[np.bool_]]:
    """An in-plane ellipse on every slice (a tube along z): its box and mask in the box."""
    reach = np.array([np.inf, semi[0] + margin, semi[1] + margin])
    middle = np.array([0.0, center[0], center[1]])
    box = grid.box(middle - reach, middle + reach)
    wy, wx = warped[1][box], warped[2][box]
    inside = ((wy - center[0]) / semi[0]) ** 2 + ((wx - center[1]) / semi[1]) ** 2 < 1.0
    return box, inside


def _paint_blob(
    grid: _Grid,
    tissue: NDArray[np.uint8],
    blob: _Blob,
    warped: tuple[FloatArray, FloatArray, FloatArray],
    margin: float,
    code: int,
    allowed: NDArray[np.bool_],
    keep: tuple[int, ...],
) -> NDArray[np.float32] | None:
    """Set `tissue` to `code` where the blob is, `allowed` holds and no `keep` tissue is.

    Returns the blob field on its box (or ``None`` if the box is empty).
    """
    box = grid.box(*blob.bounds(margin))
    if any(s.stop <= s.start for s in box):
        return None
    field = blob.field(*(w[box] for w in warped))
    mask = (field >= blob.level) & allowed[box]
    sub = tissue[box]
    for protected in keep:
        mask &= sub != protected
    sub[mask] = code
    return field


def _paint_kidney(
    grid: _Grid,
    tissue: NDArray[np.uint8],
    kidney: _Blob,
    warped: tuple[FloatArray, FloatArray, FloatArray],
    margin: float,
    inner: NDArray[np.bool_],
) -> None:
    """A kidney: cortex, with the medulla where the field is high (deep inside)."""
    keep = (BONE_CORTEX, MARROW, VESSEL)
    field = _paint_blob(grid, tissue, kidney, warped, margin, KIDNEY_CORTEX, inner, keep)
    if field is None:
        return
    sub = tissue[grid.box(*kidney.bounds(margin))]
    sub[(sub == KIDNEY_CORTEX) & (field > 0.8)] = KIDNEY_MEDULLA


def _lesions(rng: np.random.Generator, grid: _Grid, warp: _Warp, layout: _Layout) -> list[_Blob]:
    """One to four irregular blobs that fit inside the liver (in warped coordinates).

    Centres are drawn from random points deep in the liver; each lesion takes
    the first free one around which a sphere of 1.3 lesion radii stays in the
    liver and out of the kidneys, shrinking the lesion if none does.
    """
    u = grid.unit
    candidates, depth = _lesion_candidates(rng, grid, warp, layout.liver)
    floor = 1.5 * max(grid.spacing)
    free = np.ones(len(candidates), dtype=bool)
    lesions = []
    for _ in range(int(rng.integers(1, 5))):
        radius = max(rng.uniform(0.045, 0.085) * u, floor)
        satellites = int(rng.integers(0, 3))
        offsets = rng.normal(0.0, 0.45, (satellites, 3))
        sizes = rng.uniform(0.5, 0.8, (satellites, 3))
        weights = rng.uniform(0.5, 0.9, satellites)
        angle = rng.uniform(0.0, math.pi)
        index, radius = _fit_lesion(candidates, free, radius, layout)
        if index is None:
            if lesions:
                continue
            index = int(np.argmax(depth))  # always at least one lesion; clipped to the liver
        free[index] = False
        balls = [((0.0, 0.0, 0.0), (radius, radius, radius), 1.0)]
        for offset, size, weight in zip(offsets, sizes, weights):
            balls.append((tuple(radius * offset), tuple(radius * size), weight))
        lesions.append(_blob(tuple(candidates[index]), angle, balls))
    return lesions


def _lesion_candidates(
    rng: np.random.Generator, grid: _Grid, warp: _Warp, liver: _Blob
) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """Random points of the liver's box in the field of view, warped, with the liver field there."""
    lo, hi = liver.bounds(0.0)
    half_fov = np.asarray(grid.fov) / 2.0
    lo, hi = np.maximum(lo, -half_fov), np.minimum(hi, half_fov)
    points = warp.at(rng.uniform(lo, hi, size=(512, 3)))
    return points, liver.field(points[:, 0], points[:, 1], points[:, 2])


def _fit_lesion(
    candidates: NDArray[np.float64], free: NDArray[np.bool_], radius: float, layout: _Layout
) -> tuple[int | None, float]:
    """The first free candidate where a lesion of `radius` (or a smaller one) fits."""
    for scale in (1.0, 0.8, 0.6):
        probes = candidates[:, None, :] + (1.3 * scale * radius) * _PROBES[None, :, :]
        z, y, x = probes[..., 0], probes[..., 1], probes[..., 2]
        fits = free & (layout.liver.field(z, y, x) >= 1.1 * layout.liver.level).all(axis=1)
        for kidney in layout.kidneys:
            fits &= (kidney.field(z, y, x) < 0.8 * kidney.level).all(axis=1)
        if fits.any():
            return int(np.argmax(fits)), scale * radius
    return None, radius


def _probe_directions() -> NDArray[np.float64]:
    """The 6 axis and 8 diagonal unit vectors."""
    axis = np.vstack([np.eye(3), -np.eye(3)])
    diagonal = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T
    return np.vstack([axis, diagonal / math.sqrt(3.0)])


_PROBES = _probe_directions()


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _render(
    rng: np.random.Generator, grid: _Grid, tissue: NDArray[np.uint8], lesion_factor: float
) -> FloatArray:
    """Intensities with texture, bias field, partial-volume blur and Rician noise."""
    jitter = rng.uniform(0.95, 1.05, _TISSUE_INTENSITY.size).astype(np.float32)
    intensity = _TISSUE_INTENSITY * jitter
    intensity[LESION_TISSUE] = intensity[LIVER] * np.float32(lesion_factor)
    gain = np.float32(rng.uniform(0.85, 1.15))
    texture = _texture(rng, grid)
    image = intensity[tissue]
    texture *= _TISSUE_TEXTURE[tissue]
    texture += np.float32(1.0)
    image *= texture
    del texture
    image *= _bias(rng, grid) * gain
    sigma = (0.35, 0.4 / grid.spacing[1], 0.4 / grid.spacing[2])
    image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest", truncate=3.0)
    return _rician(rng, image, np.float32(rng.uniform(0.02, 0.035) * gain))


def _texture(rng: np.random.Generator, grid: _Grid) -> FloatArray:
    """Unit-variance texture: a field with features ~5 % of the field of view, plus ~1 mm grain."""
    coarse = _Noise.make(rng, grid.fov, 0.05 * grid.unit).grid(grid.axes)
    fine = rng.standard_normal(grid.shape, dtype=np.float32)
    sigma = tuple(min(1.2 / s, 4.0) for s in grid.spacing)
    fine = ndimage.gaussian_filter(fine, sigma=sigma, mode="reflect", truncate=2.5)
    fine *= np.float32(1.0 / max(float(fine[::2, ::4, ::4].std()), 1e-6))
    coarse *= np.float32(0.8)
    coarse += np.float32(0.6) * fine
    return coarse


def _bias(rng: np.random.Generator, grid: _Grid) -> FloatArray:
    """Smooth multiplicative bias: exp of a random gradient plus a weak quadratic."""
    norm = [a / np.float32(f / 2.0) for a, f in zip(grid.axes, grid.fov)]
    z, y, x = norm[0][:, None, None], norm[1][None, :, None], norm[2][None, None, :]
    direction = rng.normal(size=3)
    direction *= rng.uniform(0.15, 0.25) / np.linalg.norm(direction)
    quad = rng.normal(0.0, 0.04, size=(3, 3))
    coords = (z, y, x)
    log_bias = sum(np.float32(direction[i]) * coords[i] for i in range(3))
    for i in range(3):
        for j in range(i, 3):
            log_bias = log_bias + np.float32(quad[i, j]) * coords[i] * coords[j]
    return np.exp(log_bias).astype(np.float32)


def _rician(rng: np.random.Generator, image: FloatArray, sigma: np.float32) -> FloatArray:
    """Magnitude of the image plus complex gaussian noise (MRI-like, non-negative)."""
    real = rng.standard_normal(image.shape, dtype=np.float32)
    real *= sigma
    real += image
    imag = rng.standard_normal(image.shape, dtype=np.float32)
    imag *= sigma
    np.multiply(real, real, out=real)
    np.multiply(imag, imag, out=imag)
    real += imag
    return np.sqrt(real, out=real)
