"""The training spec: YAML validated once into frozen, typed objects.

Every problem is reported at once, each naming its key (``data.train.0.image.url``),
what was received and what is allowed. Relative local paths are relative to the spec
file's folder, as in job specs.

A minimal spec::

    data:
      train:
        - image: {url: demo-output/scene.zarr, variable: image}
          labels: {url: demo-output/scene.zarr, variable: labels}
      classes: [water, vegetation, bare_soil, road, building]
    model: {architecture: unet, config: {depth: 3, width: 16}}
    output: {model: runs/demo/model.safetensors}
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from geoseg.core.classes import describe_repeats, repeated_names
from geoseg.core.segmenter import normalization_fits
from geoseg.core.spec import PATH_KEYS, Document, Name, Section, load_yaml, relative_to_spec
from geoseg.core.urls import public_url
from geoseg.errors import GeosegError, TrainSpecError
from geoseg.jobs.spec import InputSpec

#: Spec keys that do not change what a run computes (ignored when resuming).
NEUTRAL_KEYS = ("output.overwrite", "training.loader_threads", "training.checkpoint_steps")

D = TypeVar("D", bound=Document)


RasterSpec = InputSpec  # a training raster is described exactly like a job's input

#: Largest seed (of a run, or a sweep's random search): numpy's and torch's generators both
#: take any seed in 0..MAX_SEED; torch refuses those past 64 bits.
MAX_SEED = 2**32 - 1

#: The values ``data.ignore_index`` may take: any value of an int32 or uint32 label raster.
IGNORE_INDEX_RANGE = (-(2**31), 2**32 - 1)

#: Largest class weight: the loss computes in float32, where a larger one is infinite.
MAX_CLASS_WEIGHT = float(np.finfo(np.float32).max)


Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class PairSpec(Section):
    """An image and its label raster (same grid), optionally restricted to a window."""

    image: RasterSpec
    labels: RasterSpec
    window: tuple[int, int, int, int] | None = Field(
        None, description="[row_start, row_stop, col_start, col_stop] of the part to use "
                          "(default: all of it).")

    @field_validator("window")
    @classmethod
    def _ordered(cls, value: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if value is not None:
            r0, r1, c0, c1 = value
            if min(value) < 0 or r1 <= r0 or c1 <= c0:
                raise ValueError("[row_start, row_stop, col_start, col_stop] with 0 <= start < stop")
        return value


class ClassSpec(Section):
    """An output class; a plain string in YAML is taken as its name."""

    name: Name
    color: tuple[int, int, int] = (128, 128, 128)

    @field_validator("color")
    @classmethod
    def _rgb(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if not all(0 <= c <= 255 for c in value):
            raise ValueError("three integers in 0..255 (RGB)")
        return value


class NormalizationSpec(Section):
    """Per-band mean/std: given, or measured on ``samples`` random training windows."""

    samples: int = Field(32, ge=1, description="Random training windows to measure mean/std on.")
    window: int | None = Field(None, ge=8, description="Their size (default: training.chip).")
    mean: list[float] | None = None
    std: list[float] | None = None

    @field_validator("std")
    @classmethod
    def _with_mean(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        mean = info.data.get("mean")
        if (value is None) != (mean is None):
            raise ValueError("mean and std given together (one value per band each), or neither")
        if value is not None and (len(value) != len(mean) or min(value) <= 0):
            raise ValueError(f"{len(mean)} positive value(s), one per mean")
        if value is not None and not normalization_fits(mean, value):
            raise ValueError("finite means and stds within float32's range (std >= 1.2e-38, "
                             "both <= 3.4e38): a NaN, an infinity or a value float32 cannot hold "
                             "normalises every pixel to the same value")
        return value


class DataSpec(Section):
    """Where chips come from, which classes they hold, how validation is split off."""

    train: list[PairSpec] = Field(min_length=1)
    validation: list[PairSpec] = Field(default_factory=list)
    holdout: float | None = Field(
        None, ge=0, lt=1,
        description="Fraction of rows (at the bottom) of each training pair kept for validation; "
                    "default 0.2 without validation pairs, else 0.")
    classes: list[ClassSpec] = Field(min_length=2)
    ignore_index: int = Field(255, description="Label value that is never trained on nor scored; "
                                               f"in {IGNORE_INDEX_RANGE[0]}..{IGNORE_INDEX_RANGE[1]}.")
    class_weights: Literal["auto", "none"] | list[float] = "auto"
    normalization: NormalizationSpec = NormalizationSpec()

    @field_validator("holdout")
    @classmethod
    def _some_validation(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value == 0 and not info.data.get("validation"):
            raise ValueError("> 0 when there are no validation pairs (validation mIoU needs held-out data)")
        return value

    @field_validator("classes", mode="before")
    @classmethod
    def _names_to_classes(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("classes")
    @classmethod
    def _distinct_names(cls, value: list[ClassSpec]) -> list[ClassSpec]:
        repeats = repeated_names([c.name for c in value])
        if repeats:
            raise ValueError(f"each class name once, but {describe_repeats(repeats)}; rename or "
                             "remove the duplicate (outputs, legends and metrics name classes by it)")
        return value

    @field_validator("ignore_index")
    @classmethod
    def _not_a_class(cls, value: int, info: ValidationInfo) -> int:
        n = len(info.data.get("classes") or [])
        low, high = IGNORE_INDEX_RANGE
        if 0 <= value < n or not low <= value <= high:
            raise ValueError(f"a value that is not a class id (0..{n - 1}), e.g. 255, within "
                             f"{low}..{high} (the values an int32 or uint32 label raster holds)")
        return value

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any, info: ValidationInfo) -> Any:
        n = len(info.data.get("classes") or [])
        if isinstance(value, str) and value in ("auto", "none"):
            return value
        if (isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                            and 0 <= v <= MAX_CLASS_WEIGHT for v in value)
                and any(v > 0 for v in value) and (not n or len(value) == n)):
            return value
        raise ValueError(f"'auto' (inverse sqrt frequency), 'none', or a list of {n or 'N'} "
                         f"finite non-negative weights (at most {MAX_CLASS_WEIGHT:.3g}, float32's "
                         "largest), one per class, at least one above 0 (a class weighted 0 is "
                         "never trained on)")

    @property
    def holdout_fraction(self) -> float:
        """The holdout in effect: the given one, else 0.2 without validation pairs, else 0."""
        if self.holdout is not None:
            return self.holdout
        return 0.0 if self.validation else 0.2


class ModelSpec(Section):
    """Which network to train: any registered 2D architecture and its keyword arguments, from
    random weights or, with ``init``, from a model file's (fine-tuning)."""

    name: str | None = Field(None, description="Model name in its metadata (default: the spec's name).")
    init: str | None = Field(
        None, min_length=1,
        description="Model file to start from (path, URL or builtin:NAME; a relative path is "
                    "relative to the spec's folder): its weights are fine-tuned, and architecture "
                    "and config default to its own.")
    storage_options: dict[str, Any] = Field(default_factory=dict,
                                            description="fsspec options for reading model.init.")
    architecture: str = "unet"
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="Keyword arguments of the architecture, except "
                                               "in_channels and num_classes (set from the data).")

    @field_validator("architecture")
    @classmethod
    def _registered(cls, value: str) -> str:
        names = two_d_architectures()
        if value not in names:
            raise ValueError(f"one of the registered 2D architectures: {', '.join(names)}")
        return value

    @field_validator("config")
    @classmethod
    def _buildable(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        import torch

        from geoseg import budgets
        from geoseg.errors import BudgetError
        from geoseg.models import build_network

        fixed = sorted({"in_channels", "num_classes"} & set(value))
        if fixed:
            raise ValueError(f"no {', '.join(fixed)}: the trainer sets it from the data (bands, classes)")
        architecture = info.data.get("architecture")
        if architecture is None or info.data.get("init") is not None:
            # with init, the trainer refuses any config but the file's, which its header checks
            return value
        try:  # on the meta device: counted, never allocated
            with torch.device("meta"):
                net = build_network(architecture, {**value, "in_channels": 1, "num_classes": 2})
        except RuntimeError as exc:
            if "overflow" not in str(exc):
                raise ValueError(f"arguments that {architecture!r} accepts ({exc})") from None
            limit = budgets.figure(budgets.limit(budgets.MAX_MODEL_PARAMETERS))
            raise ValueError(f"a network within the budget: {architecture} with config {value} "
                             "builds a tensor too large even to count; the limit is "
                             f"{limit} parameters ({budgets.MAX_MODEL_PARAMETERS})") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"arguments that {architecture!r} accepts ({exc})") from None
        state = net.state_dict().values()
        try:
            budgets.check_model(sum(t.numel() for t in state),
                                sum(t.numel() * t.element_size() for t in state),
                                f"{architecture} with config {value}")
        except BudgetError as exc:
            raise ValueError(f"a network within the budget: {str(exc).rstrip('.')}") from None
        return value


class EarlyStoppingSpec(Section):
    """Stop when validation mIoU has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = Field(ge=1)
    min_delta: float = Field(0.0, ge=0, allow_inf_nan=False)


class AugmentSpec(Section):
    flips: bool = True
    rot90: bool = True


#: Most threads ``training.loader_threads`` or ``training.torch_threads`` may ask for: more than
#: the cores of any machine a run is given, far fewer than a typo (100000) would start.
MAX_THREADS = 1024
MAX_LR = 10.0  # training.lr: any useful rate is far below; past float32's range torch fails to set it


class TrainingSpec(Section):
    """Optimisation: AdamW, linear warmup then cosine decay, chips drawn at random."""

    epochs: int = Field(20, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    chip: int = Field(128, ge=8, description="Chip side in pixels; a multiple of the network's stride.")
    lr: float = Field(1e-3, gt=0, le=MAX_LR, allow_inf_nan=False, description=(
        f"Peak learning rate (AdamW, reached after the warm-up); at most {MAX_LR:g}: useful rates "
        "are far below 1, and past float32's range torch cannot even set one."))
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    warmup: float = Field(0.05, ge=0, lt=1, description="Fraction of all steps with linear warmup.")
    final_lr: float = Field(0.01, ge=0, le=1, description="Last learning rate as a fraction of lr.")
    augment: AugmentSpec = AugmentSpec()
    mixed_precision: Literal["auto", "bf16", "off"] = "auto"
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    early_stopping: EarlyStoppingSpec | None = None
    keep: Literal["best", "last"] = Field(
        "best", description="Weights to save: the best validation epoch's, or the last.")
    loader_threads: int = Field(2, ge=1, description="Threads reading chips ahead of the training "
                                                     f"step; at most {MAX_THREADS}.")
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps the default; "
                                                    f"at most {MAX_THREADS}.")
    checkpoint_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every this many steps inside an epoch, to resume "
                                "from (default: at epoch ends only).")

    @field_validator("loader_threads", "torch_threads")
    @classmethod
    def _threads(cls, value: int) -> int:
        if value > MAX_THREADS:
            raise ValueError(f"at most {MAX_THREADS} threads; about the machine's cores is enough "
                             "(each thread costs memory, and past the cores they only wait their turn)")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value


class ValidationSpec(Section):
    """Held-out windows scored every epoch; read once, at most ``max_windows`` of ``tile`` pixels."""

    tile: int = Field(256, ge=8)
    max_windows: int = Field(32, ge=1)


class OutputSpec(Section):
    model: str = Field(description="Model file to write (path or fsspec URL).")
    run_dir: str | None = Field(
        None, description="Run record and checkpoints (default: MODEL.run next to the model).")
    overwrite: bool = False
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def run_url(self) -> str:
        """The run folder: ``run_dir``, else the model URL with its suffix replaced by ``.run``."""
        if self.run_dir:
            return self.run_dir.rstrip("/")
        head, _, tail = self.model.rpartition("/")
        stem = tail.rsplit(".", 1)[0] if "." in tail else tail
        return f"{head}/{stem}.run" if head else f"{stem}.run"


class TrainSpec(Document):
    """A whole training run: data, network, optimisation, validation, outputs."""

    document: ClassVar[str] = "training spec"
    sections: ClassVar[str] = "sections (data, model, training, validation, output)"
    error: ClassVar[type[GeosegError]] = TrainSpecError

    name: Name = "training"
    seed: Seed = 0
    data: DataSpec
    model: ModelSpec = ModelSpec()
    training: TrainingSpec = TrainingSpec()
    validation: ValidationSpec = ValidationSpec()
    output: OutputSpec

    @property
    def model_name(self) -> str:
        return self.model.name or self.name

    def check(self, source: str) -> None:
        """Refuse a batch whose chips would not fit the memory budget, before any data is read."""
        selected = [len(p.image.bands) for p in self.data.train if p.image.bands]
        check_batch(self.training, selected[0] if selected else 1, known=bool(selected),
                    source=source)

    def redacted(self) -> dict[str, Any]:
        """The spec as plain data: storage option values hidden, URLs without secrets."""
        return redact(self.model_dump(mode="json"))

    def fingerprint(self) -> str:
        """sha256 of everything that changes what the run computes (see :data:`NEUTRAL_KEYS`)."""
        return hashlib.sha256(json.dumps(comparable(self), sort_keys=True).encode()).hexdigest()


#: Batches the chip loader (:class:`~geoseg.training.data.ChipLoader`) reads ahead of the one
#: training: it holds ``PREFETCH + 1`` batches at once.
PREFETCH = 2

#: What a chip, or a validation window, holds while it is read and prepared, in chips' worth of
#: float32 image and int64 labels: its raw read, its prepared arrays and the masks between them
#: (the most that a raster of up to 4-byte values needs).
READ_COPIES = 3


def batch_bytes(batch_size: int, chip: int, bands: int) -> int:
    """Bytes of one training batch as the chip loader builds it: ``batch_size`` chips of
    ``chip`` x ``chip`` pixels, float32 images of ``bands`` bands and int64 labels."""
    return batch_size * chip * chip * (4 * bands + 8)


def chips_being_read(batch_size: int, threads: int) -> int:
    """Chips the loader reads at once: one a thread, and no more than the batches read ahead."""
    return min(threads, PREFETCH * batch_size)


def loader_bytes(batch_size: int, chip: int, bands: int, threads: int) -> int:
    """Bytes the chip loader holds at once: ``PREFETCH + 1`` batches (the one training and those
    read ahead), and :data:`READ_COPIES` chips' worth for each chip being read."""
    return ((PREFETCH + 1) * batch_bytes(batch_size, chip, bands)
            + chips_being_read(batch_size, threads) * READ_COPIES * batch_bytes(1, chip, bands))


def check_batch(training: TrainingSpec, bands: int, *, known: bool, source: str = "") -> None:
    """Refuse a ``training.batch_size`` (or a ``training.chip``) whose chips, as the loader
    holds them (:func:`loader_bytes`), take more than ``GEOSEG_MAX_WINDOW_BYTES``, the budget
    of what is read at once. ``bands`` is the images' band count when ``known``, else a lower
    bound (the rasters are not open)."""
    from geoseg import budgets

    t = training
    allowed = budgets.limit(budgets.MAX_WINDOW_BYTES)
    n_bytes = loader_bytes(t.batch_size, t.chip, bands, t.loader_threads)
    if n_bytes <= allowed:
        return
    key, received, expected = _batch_fix(t, bands, allowed, known)
    least = "" if known else "at least "
    raise TrainSpecError(
        f"{source + ': ' if source else ''}training.{key}: received {received}; the chip loader "
        f"holds {PREFETCH + 1} batches at once (one training, {PREFETCH} read ahead) of "
        f"{t.batch_size} chip(s) of {t.chip} x {t.chip} pixels with {least}{bands} band(s), "
        f"{least}{budgets.size(batch_bytes(t.batch_size, t.chip, bands))} each, and "
        f"{READ_COPIES} chips' worth for each of the "
        f"{chips_being_read(t.batch_size, t.loader_threads)} chip(s) being read "
        f"(training.loader_threads): {least}{budgets.size(n_bytes)} in all (float32 images, "
        f"int64 labels), over the limit of {budgets.size(allowed)} ({budgets.MAX_WINDOW_BYTES}); "
        f"expected {expected}. Lower training.batch_size or training.chip, or raise "
        f"{budgets.MAX_WINDOW_BYTES} if the machine has the memory.")


def _batch_fix(training: TrainingSpec, bands: int, allowed: int, known: bool) -> tuple[str, int, str]:
    """The key to change, its value and what it should be: the batch size, or the chip when
    not even a batch of one chip fits."""
    fewer = "" if known else " (fewer if the images have more bands)"
    threads, chip = training.loader_threads, training.chip
    most = largest(lambda n: loader_bytes(n, chip, bands, threads) <= allowed,
                   allowed // batch_bytes(1, chip, bands))
    if most:
        return "batch_size", training.batch_size, f"at most {most} chips of this size{fewer}"
    side = largest(lambda n: loader_bytes(1, n, bands, threads) <= allowed,
                   math.isqrt(allowed // batch_bytes(1, 1, bands)))
    return "chip", training.chip, f"a chip of at most {side} pixels, in batches of one{fewer}"


def largest(fits: Callable[[int], bool], high: int) -> int:
    """The largest ``n`` in ``0..high`` for which ``fits(n)``, a test that holds up to some
    ``n`` and fails beyond it; 0 when only 0 fits (a binary search: a few dozen calls)."""
    low = 0
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


# rasters' url, output.model and .run_dir, model.init
TRAIN_PATH_KEYS = PATH_KEYS | {"model", "run_dir", "init"}


def load_train_spec(path: str | Path) -> TrainSpec:
    """Read and validate a YAML training spec (``yaml.safe_load``: no tags, no code).

    Raises
    ------
    TrainSpecError
        When the file is missing, is not YAML, or does not validate; the message
        names every bad key with what was received and what is expected.
    """
    path = Path(path)
    data = relative_to_spec(read_yaml(path, "training spec"), path.parent, TRAIN_PATH_KEYS)
    return TrainSpec.from_dict(data, str(path))



def as_spec(spec: Any, cls: type[D], load: Callable[[str | Path], D]) -> D:
    """``spec`` as a ``cls``: itself, its plain-data form, or the path of a YAML file (read by ``load``)."""
    if isinstance(spec, cls):
        return spec
    if isinstance(spec, dict):
        return cls.from_dict(spec)
    return load(spec)


def read_yaml(path: str | Path, what: str) -> Any:
    """The plain data of a training or sweep spec file, read as every spec is
    (:func:`~geoseg.core.spec.load_yaml`); its problems are :class:`TrainSpecError` s."""
    return load_yaml(path, what, TrainSpecError)


def two_d_architectures() -> list[str]:
    """Registered architectures that segment 2D rasters (``spatial_dims == 2``)."""
    import geoseg.models  # noqa: F401  (registers the architectures)
    from geoseg.models.registry import architecture_class, architectures

    return [n for n in architectures() if getattr(architecture_class(n), "spatial_dims", 2) == 2]


def comparable(spec: TrainSpec | dict[str, Any]) -> dict[str, Any]:
    """The redacted spec without :data:`NEUTRAL_KEYS`: what must match to resume a run."""
    data = spec.redacted() if isinstance(spec, TrainSpec) else json.loads(json.dumps(spec))
    for key in NEUTRAL_KEYS:
        section, name = key.split(".")
        data.get(section, {}).pop(name, None)
    return data


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested plain-data specs."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".") or "(top level)"]


def redact(data: Any) -> Any:
    """Hide storage option values and strip secrets from ``url``/``model``/``run_dir``/``init``
    strings."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key == "storage_options" and isinstance(value, dict):
                out[key] = f"<{len(value)} option(s) hidden>" if value else {}
            elif key in ("url", "model", "run_dir", "init", "base", "dir") and isinstance(value, str):
                out[key] = public_url(value)
            else:
                out[key] = redact(value)
        return out
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data
