"""Model files: safetensors weights with the model's JSON metadata in the header.

Nothing in a model file executes: tensors are read by safetensors, metadata by
``json``, and the network is built from a registered architecture's own code. Pickled
checkpoints and TorchScript archives are refused: the one runs code when unpickled, the
other runs the code stored in it at every forward pass. The metadata carries a sha256 of
the weights, checked on every load.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import re
import struct
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import fsspec
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from geoseg import budgets, config
from geoseg.core import jsontext, redact
from geoseg.core.classes import short_list
from geoseg.core.text import brief
from geoseg.core.urls import credentials_refused, public_url
from geoseg.errors import (
    BudgetError,
    GeosegError,
    ModelConfigError,
    ModelFileError,
    NestingError,
    OutputExistsError,
    ParameterError,
)
from geoseg.io import remote
from geoseg.io.files import write_whole
from geoseg.io.readers.probe import special_file
from geoseg.models.header import ModelHeader, ModelInfo, ModelRef
from geoseg.models.model import SegmentationModel, weights_sha256
from geoseg.models.registry import build_network
from geoseg.models.tensors import non_finite_said
from geoseg.tiling.plan import coerce_per_axis

T = TypeVar("T")
FORMAT = "geoseg-model/1"
BUILTIN_PREFIX = "builtin:"
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2, zip (torch.save)
MAX_HEADER = 100 << 20  # safetensors refuses headers over 100 MB
Shapes = dict[str, tuple[int, ...]]  # tensor name -> shape


def builtin_models() -> list[str]:
    """Names of the models shipped inside the package (``builtin:NAME``)."""
    folder = resources.files("geoseg.models") / "bundled"
    return sorted(p.name.removesuffix(".safetensors") for p in folder.iterdir()
                  if p.name.endswith(".safetensors"))


def resolve_url(url: str) -> str:
    """Map ``builtin:NAME`` to the bundled file; anything else is returned as is."""
    if not url.startswith(BUILTIN_PREFIX):
        return url
    name = url.removeprefix(BUILTIN_PREFIX)
    path = Path(str(resources.files("geoseg.models") / "bundled" / f"{name}.safetensors"))
    if not path.exists():
        raise ModelFileError(f"No built-in model {name!r}; built-in models: {', '.join(builtin_models())}.")
    return str(path)


def model_to_bytes(model: SegmentationModel) -> tuple[bytes, ModelInfo]:
    """Serialize a model; returns the file's bytes and the metadata stored in it."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    info = ModelInfo.from_dict({**model.info.to_dict(), "sha256": weights_sha256(state)})
    header = {"format": FORMAT, "model": json.dumps(info.to_dict(), sort_keys=True)}
    return save_tensors(state, metadata=header), info


def save_model(model: SegmentationModel, url: str | os.PathLike[str], *,
               storage_options: dict[str, Any] | None = None, overwrite: bool = False) -> ModelRef:
    """Write ``model`` to ``url`` (a path or ``os.PathLike``, or any fsspec URL; a local
    folder is created as needed) and return a reference workers can load."""
    if not isinstance(model, SegmentationModel):
        raise ParameterError(
            f"save_model(): model: received {type(model).__name__} {brief(model, 60)}; expected a "
            "SegmentationModel (a network with its metadata, e.g. from geoseg.load_model). An "
            "Ensemble, TTA or classical method has no weights file of its own: save each network "
            "it holds, and rebuild the wrapper from them.")
    url = model_url(url, "save_model")
    _refuse_credentials(url)
    options = dict(storage_options or {})
    with remote.storage_errors(url, options, "Writing model file"):
        fs, path = fsspec.core.url_to_fs(url, **options)
        if fs.isdir(path):
            raise OutputExistsError(f"{public_url(url)} is a folder; expected the path of a file "
                                    "to write, e.g. a name ending in .safetensors inside it.")
        if fs.exists(path) and not overwrite:
            raise OutputExistsError(f"{public_url(url)} already exists; pass overwrite=True to "
                                    "replace it.")
        _check_saveable_weights(model, url)
        data, info = model_to_bytes(model)
        _check_loadable(info, data, url)
        write_whole(url, data, storage_options=options, what="Writing model file")
    return ModelRef(url, info.sha256, options)


def _check_loadable(info: ModelInfo, data: bytes, url: str) -> None:
    """Refuse to write a file :func:`load_model` would refuse: the architecture and config its
    metadata names must build the network whose tensors it holds."""
    try:
        meta_network(info, data, url)
    except ModelFileError as exc:
        raise ParameterError(
            f"save_model(): {public_url(url)} was not written: load_model would refuse it, as "
            f"its ModelInfo does not describe the network: {exc} Give ModelInfo the architecture "
            "and config the network was built with "
            "(geoseg.models.registry.build_network(architecture, config)).") from None


def _public_errors(load: Callable[..., T]) -> Callable[..., T]:
    """A geoseg error from loading a model file names it in its public form: a signed URL's
    query and user info never reach a message, whichever helper raised it."""

    @functools.wraps(load)
    def wrapper(url: str, *args: Any, **kwargs: Any) -> T:
        url = model_url(url, load.__name__)
        try:
            return load(url, *args, **kwargs)
        except GeosegError as exc:
            error = type(exc)(redact.scrub(str(exc), redact.url_secrets(url)))
        raise error  # out of the except: nothing else travels from a worker with it

    return wrapper


def model_url(url: Any, caller: str = "load_model") -> str:
    """``url`` as a string: a path or URL string, or an ``os.PathLike`` (its path); anything else
    is a :class:`~geoseg.errors.ParameterError` saying what is taken."""
    text = os.fspath(url) if isinstance(url, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise ParameterError(
            f"{caller}(): url: received {brief(url)} (of type {type(url).__name__}); expected a model "
            "file's path or URL string (or os.PathLike such as pathlib.Path), e.g. "
            "'builtin:demo-unet', 'model.safetensors' or 's3://bucket/model.safetensors'.")
    return text


@_public_errors
def load_model(url: str, *, storage_options: dict[str, Any] | None = None,
               device: str | None = None, expected_sha256: str | None = None) -> SegmentationModel:
    """Load a model file (a path or ``os.PathLike``, an fsspec URL, or ``builtin:NAME``) onto
    ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``; default ``GEOSEG_DEVICE``).

    Raises :class:`~geoseg.errors.ModelFileError` when the file is missing, is a
    pickle, lacks geoseg metadata, declares tensors its config does not build, or its
    weights do not match their hash (or ``expected_sha256``), and
    :class:`~geoseg.errors.BudgetError` when its config builds a network over the model
    budgets (:func:`meta_network`), before the network is built.
    """
    config.resolve_device(device, "load_model(): device")  # refused before the file is read
    head = _read_head(url, storage_options or {})
    info = _parse_header(head, url)
    meta_network(info, head, url)  # budgets and tensor shapes, before any weight is read
    state = _tensors(_read_declared(url, storage_options or {}, head), url)
    actual = weights_sha256(state)
    _check_hash(url, actual, info.sha256, expected_sha256)
    for name, tensor in state.items():
        _check_finite(url, name, tensor)
    net = build_network(info.architecture, info.config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"Weights in {url} do not fit architecture {info.architecture!r}: {exc}") from None
    ref = ModelRef(url, actual, dict(storage_options or {}))
    return SegmentationModel(net, info, source=ref, device=device)


@_public_errors
def read_header(url: str, *, storage_options: dict[str, Any] | None = None) -> ModelHeader:
    """What a model file says of itself, without its weights: for a safetensors file only its
    header is read, and stride and receptive field come from the architecture built on torch's
    ``meta`` device (no memory, no weights), checked against the model budgets and the tensors
    the header declares (:func:`meta_network`). Workers check the weights against the recorded
    sha256 when they load them."""
    options = dict(storage_options or {})
    head = _read_head(url, options)
    info = _parse_header(head, url)
    if not info.sha256:
        raise ModelFileError(f"{url} records no sha256 of its weights; re-save it with geoseg.save_model().")
    net = meta_network(info, head, url)
    _check_complete(url, options, head)
    ndim = getattr(net, "spatial_dims", 2)
    return ModelHeader(info, ModelRef(url, info.sha256, options),
                       stride=coerce_per_axis(net.stride, ndim, "stride"),
                       halo=coerce_per_axis(net.receptive_radius, ndim, "receptive_radius"),
                       global_context=bool(getattr(net, "global_context", False)),
                       parameters=sum(p.numel() for p in net.parameters()))


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                      "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
                      "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


@_public_errors
def check_weights(url: str, *, storage_options: dict[str, Any] | None = None) -> str:
    """The sha256 of a model file's weights, computed as :func:`load_model` computes it but
    read one tensor at a time, without building the network: memory stays that of its largest
    tensor. Raises :class:`~geoseg.errors.ModelFileError` when it differs from the one its
    metadata records (the file was damaged or its weights replaced), as a run's workers would
    when they load it. Call it after :func:`read_header` has found the header sound."""
    options = dict(storage_options or {})
    head = _read_head(url, options)
    info = _parse_header(head, url)
    (length,) = struct.unpack("<Q", head[:8])
    table = jsontext.loads(head[8 : 8 + length])
    digest = hashlib.sha256()
    with _opened(url, options) as f:
        for name in sorted(n for n in table if n != "__metadata__"):
            entry = table[name]
            begin, end = (int(v) for v in entry["data_offsets"])
            if not 0 <= begin <= end or not isinstance(entry.get("dtype"), str) \
                    or entry["dtype"] not in SAFETENSORS_DTYPES:
                return _check_loaded(url, options, info)  # load_model's own words for it
            f.seek(8 + length + begin)
            data = f.read(end - begin)
            if len(data) != end - begin:
                return _check_loaded(url, options, info)
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            digest.update(f"{name}|{dtype}|{tuple(int(n) for n in entry['shape'])}|".encode())
            digest.update(data)
            if dtype.is_floating_point and data:
                _check_finite(url, name, _view(data, dtype))
    actual = digest.hexdigest()
    _check_hash(public_url(url), actual, info.sha256, None)
    return actual


def _check_loaded(url: str, options: dict[str, Any], info: ModelInfo) -> str:
    """The weights' sha256 as :func:`load_model` reads them all (a file :func:`check_weights`
    cannot read tensor by tensor: truncated, or a dtype it does not list)."""
    actual = weights_sha256(_tensors(_read_declared(url, options, _read_head(url, options)), url))
    _check_hash(public_url(url), actual, info.sha256, None)
    return actual


def meta_network(info: ModelInfo, data: bytes, url: str) -> nn.Module:
    """The network ``info`` describes, built on torch's ``meta`` device (shapes, no memory),
    once its size is within the budgets and its tensors are those ``data``'s header declares.

    Raises
    ------
    BudgetError
        When the network has more than ``GEOSEG_MAX_MODEL_PARAMETERS`` values (parameters and
        buffers) or they take more than ``GEOSEG_MAX_MODEL_BYTES``: a header's config can ask
        for any size, and building it for real would allocate it all.
    ModelFileError
        When the config does not build, or builds tensors other than those the file holds.
    """
    what = f"model file {public_url(url)} ({info.architecture}, config {_short(info.config)})"
    (length,) = struct.unpack("<Q", data[:8])
    table = jsontext.loads(data[8 : 8 + length])  # found well formed by _parse_header
    declared = _declared_tensors(table, what)
    net = _build_on_meta(info, what, len(declared))
    state = net.state_dict()
    budgets.check_model(sum(t.numel() for t in state.values()),
                        sum(t.numel() * t.element_size() for t in state.values()), what)
    built = {name: tuple(t.shape) for name, t in state.items()}
    _check_tensors(what, built, declared)
    _check_dtypes(what, state, table)
    _check_classes(what, info)
    return net


def _check_classes(what: str, info: ModelInfo) -> None:
    """Refuse a file whose network scores another number of classes than its metadata names
    (the config's ``num_classes``, which built the tensors just checked, against the classes)."""
    channels = info.config.get("num_classes")
    if isinstance(channels, int) and channels != len(info.classes):
        names = [c.name for c in info.classes]
        raise ModelFileError(
            f"{what} scores {channels} classes but its metadata names {len(names)} "
            f"({short_list(names)}); the class list was edited or belongs to another network. "
            "Re-save the model with one class per output channel (geoseg.save_model()).")


def _build_on_meta(info: ModelInfo, what: str, declared: int) -> nn.Module:
    """The network on the meta device; a config its architecture refuses (``depth: -1``, an
    unknown argument, an unknown architecture) is the file's fault, and names the file. The
    build stops once it has made far more modules and tensors than the ``declared`` tensors
    the file holds (:func:`_parts_bounded`): a config's ``convs: 60000`` of tiny layers passes
    every size budget, yet building it took minutes and gigabytes before any check."""
    try:
        with torch.device("meta"), _parts_bounded(what, PARTS_PER_TENSOR * declared + MIN_PARTS):
            return build_network(info.architecture, info.config)
    except (ModelConfigError, ModelFileError) as exc:
        raise ModelFileError(f"{what} does not build: {exc} Correct the config in the file's "
                             "metadata, or save the model again with geoseg.save_model().") from None
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise ModelFileError(f"{what} does not build: {exc}") from None
        limit = budgets.figure(budgets.limit(budgets.MAX_MODEL_PARAMETERS))
        raise BudgetError(  # a tensor of more than 2**63 bytes: too large even to count
            f"{what} builds a network with a tensor too large to count ({exc}); the limit "
            f"is {limit} parameters ({budgets.MAX_MODEL_PARAMETERS}). Check the file's "
            "config.") from None
    except GeosegError:
        raise
    except ValueError as exc:
        raise ModelFileError(f"{what} does not build: {exc}") from None


PARTS_PER_TENSOR = 4  # modules and tensors a network builds per tensor it holds, at most
MIN_PARTS = 256  # and a few more: activations, pools and containers hold no tensor


class _PartBudget(threading.local):
    """The build under way on this thread: its name, the parts it may make, those it made."""

    what: str | None = None
    most = 0
    made = 0


_BUDGET = _PartBudget()


def _count_part(*_: Any) -> None:
    """torch's registration hook, for every thread: counts a part of this thread's bounded build
    (:func:`_parts_bounded`), if one is under way, and refuses the one past its budget."""
    budget = _BUDGET
    if budget.what is None:
        return
    budget.made += 1
    if budget.made > budget.most:
        most = budget.most
        raise BudgetError(
            f"{budget.what} builds more than {most:,} modules and tensors, though the file holds "
            f"{(most - MIN_PARTS) // PARTS_PER_TENSOR:,} tensors: its config asks for "
            "layers the file has no weights for. Check the config in the file's metadata, "
            "or save the model again with geoseg.save_model().")


def _install_part_hooks() -> None:
    """Register :func:`_count_part` with torch's global module, parameter and buffer hooks,
    once, for good: torch walks those hooks unlocked as any thread makes a module, so adding
    or removing one while another thread builds fails that build ("OrderedDict mutated during
    iteration"). Done as this module is imported, before any job's thread runs."""
    from torch.nn.modules import module

    module.register_module_module_registration_hook(_count_part)
    module.register_module_parameter_registration_hook(_count_part)
    module.register_module_buffer_registration_hook(_count_part)


_install_part_hooks()


@contextlib.contextmanager
def _parts_bounded(what: str, most: int) -> Iterator[None]:
    """Refuse (:class:`~geoseg.errors.BudgetError`) a build on this thread that registers more
    than ``most`` modules, parameters and buffers, as it registers them. Other threads' builds,
    bounded or not, go on uncounted here (:func:`_count_part`)."""
    budget = _BUDGET
    saved = (budget.what, budget.most, budget.made)
    budget.what, budget.most, budget.made = what, most, 0
    try:
        yield
    finally:
        budget.what, budget.most, budget.made = saved


def _declared_tensors(table: dict[str, Any], what: str) -> Shapes:
    """Name -> shape of every tensor a safetensors header ``table`` declares."""
    try:
        return {name: tuple(int(n) for n in entry["shape"]) for name, entry in table.items()
                if name != "__metadata__"}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{what}: its safetensors header lists a tensor without a valid shape "
                             f"({type(exc).__name__}: {exc}); the file is corrupt.") from None


def _check_tensors(what: str, built: Shapes, declared: Shapes) -> None:
    """Refuse a file whose tensors are not those its config builds (names and shapes)."""
    if built == declared:
        return
    differ = sorted(n for n in built.keys() | declared.keys() if built.get(n) != declared.get(n))
    shown = ", ".join(f"{n}: builds {built.get(n, 'none')}, file holds {declared.get(n, 'none')}"
                      for n in differ[:3])
    raise ModelFileError(
        f"{what} builds {len(built)} tensors of {budgets.figure(_values(built))} values but the "
        f"file holds {len(declared)} of {budgets.figure(_values(declared))}; {len(differ)} differ "
        f"({shown}). The metadata was edited or the weights belong to another network; "
        "re-save the model with geoseg.save_model().")


def _check_dtypes(what: str, built: dict[str, torch.Tensor], table: dict[str, Any]) -> None:
    """Refuse a file holding a tensor in another kind of type than the network's (integer
    weights of a float layer: loaded, they were cast and scored class 0 everywhere); a float
    of another width (float16 or float64 for float32) is cast, as intended. ``table``: the
    safetensors header, its tensors those ``built`` (:func:`_check_tensors`)."""
    for name, tensor in built.items():
        named = table[name].get("dtype")  # what a header says: any JSON value
        stored = SAFETENSORS_DTYPES.get(named) if isinstance(named, str) else None
        if stored is None:
            raise ModelFileError(
                f"{what}: tensor {name} has dtype {brief(named, 40)}; geoseg reads "
                f"{', '.join(SAFETENSORS_DTYPES)}. Save the model again from its network with "
                "geoseg.save_model() (float32), or re-download the file if it is damaged.")
        if stored.is_floating_point != tensor.is_floating_point():
            raise ModelFileError(
                f"{what}: tensor {name} is stored as {stored} but the network holds it as "
                f"{tensor.dtype}; the weights were converted to another kind of number. Save the "
                "model again from its trained network with geoseg.save_model().")


def _view(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    """``data`` as a flat tensor of ``dtype``, without a copy (read only: torch warns that the
    buffer cannot be written, which nothing here does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(data, dtype=dtype)


def _check_finite(url: str, name: str, tensor: torch.Tensor) -> None:
    """Refuse weights holding NaN or infinite values (:func:`non_finite_said`): the network
    would score NaN everywhere, which class ids would show as class 0 and probabilities as no
    data."""
    said = non_finite_said({name: tensor})
    if said:
        raise ModelFileError(
            f"Model file {public_url(url)}: {said}; training diverged, or the file was damaged "
            "before it was saved. Use a checkpoint from before the divergence.")


def _check_saveable_weights(model: SegmentationModel, url: str) -> None:
    """Refuse to write weights :func:`load_model` would refuse as NaN or infinite."""
    said = non_finite_said(model.net.state_dict())
    if said:
        raise ParameterError(
            f"save_model(): {public_url(url)} was not written: load_model would refuse it, as "
            f"its {said}; training diverged. Save a checkpoint from before the divergence.")


def _values(shapes: Shapes) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def _short(config: dict[str, Any], most: int = 200) -> str:
    """A config as JSON, cut to ``most`` characters (a hostile one may be long)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return text if len(text) <= most else text[: most - 3] + "..."


def _read_head(url: str, storage_options: dict[str, Any]) -> bytes:
    """The first bytes of a model file: a safetensors file's length prefix and JSON header, or a
    whole zip archive (TorchScript or a torch.save pickle, both refused by :func:`_parse_header`)."""
    with _opened(url, storage_options) as f:
        prefix = f.read(8)
        if prefix.startswith(b"PK"):
            return prefix + f.read()
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        return prefix + f.read(min(length, MAX_HEADER))


def _refuse_credentials(url: str) -> None:
    """A model URL with credentials where its store cannot take them (``s3://KEY:SECRET@...``)."""
    refused = credentials_refused(url, "Model file")
    if refused is not None:
        raise ModelFileError(refused)


@contextlib.contextmanager
def _opened(url: str, storage_options: dict[str, Any]) -> Iterator[Any]:
    """The model file open for reading; a missing file or a storage failure (refused, denied,
    unreachable) raises a geoseg error naming it."""
    _refuse_credentials(url)
    local = resolve_url(url)
    kind = special_file(local) if remote.is_local(local) else None
    if kind is not None:  # its read would block (a FIFO) or never end (/dev/zero)
        raise ModelFileError(f"Model file {public_url(url)} is {kind}, not a file; expected the "
                             "path of a model file (.safetensors). Give the file itself.")
    with remote.storage_errors(url, storage_options, "Reading model file"):
        try:
            with fsspec.open(resolve_url(url), "rb", **storage_options) as f:
                yield f
        except FileNotFoundError:
            raise ModelFileError(f"No model file at {public_url(url)}. Check the path, or use one of: "
                                 + ", ".join(BUILTIN_PREFIX + n for n in builtin_models())) from None
        except IsADirectoryError:
            raise ModelFileError(f"{public_url(url)} is a folder; expected the path of a model file "
                                 "(e.g. a name ending in .safetensors inside it, as save_model "
                                 "writes).") from None


def _tensors(data: bytes, url: str) -> dict[str, torch.Tensor]:
    """The weights of a safetensors file; a truncated or corrupt one raises ModelFileError."""
    try:
        return load_tensors(data)
    except Exception as exc:  # noqa: BLE001 - safetensors' own error types vary by version
        said = remote.reason(exc)
    raise ModelFileError(  # out of the except: a worker's error travels without safetensors'
        f"Model file {public_url(url)} is truncated or corrupt: its weights cannot be read "
        f"({said}). Re-download or re-export it.")


def _check_complete(url: str, storage_options: dict[str, Any], head: bytes) -> None:
    """Refuse a safetensors file shorter than its header says (truncated by a failed copy)."""
    expected = _declared_size(url, head)
    with remote.storage_errors(url, storage_options, "Reading model file"):
        fs, path = fsspec.core.url_to_fs(resolve_url(url), **storage_options)
        size = fs.size(path)
    if size is not None and size < expected:
        raise ModelFileError(
            f"Model file {public_url(url)} is truncated: its header declares {expected} "
            f"bytes but the file holds {size}. Re-download or re-export it.")


SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_hash(url: str, actual: str, recorded: str, expected: str | None) -> None:
    if expected is not None and not SHA256.fullmatch(str(expected)):
        raise ParameterError(
            f"expected_sha256: received {str(expected)[:80]!r}; expected the 64 lowercase hex "
            "digits of a model's weights hash, as geoseg info MODEL or load_model(url).info.sha256 "
            "gives it (or None not to check).")
    for label, wanted in (("its metadata", recorded), ("the job (expected_sha256)", expected)):
        if wanted and wanted != actual:
            raise ModelFileError(
                f"Model file {url} has weights with sha256 {actual[:16]}... but {label} expects "
                f"{wanted[:16]}...; the file is corrupt or was replaced. Re-export or re-download it."
            )


CHECKPOINT_NAME = re.compile(r"state-\d+(-\d+)?\.safetensors$")  # geoseg train's checkpoints


def _not_a_model(url: str, exc: Exception) -> str:
    """Why the safetensors file at ``url`` is no model file: a training checkpoint by its name,
    else what its metadata lacks."""
    if CHECKPOINT_NAME.search(url.rstrip("/")):
        return (f"{url} is a checkpoint of a geoseg train run (its weights and optimizer state "
                "between epochs), not a model file. The model file is the training spec's "
                "output.model, written when training ends; for a run that stopped early, rerun "
                "the same geoseg train command to finish it and write the model.")
    if isinstance(exc, KeyError) and exc.args:
        key = exc.args[0]
        missing = "metadata" if key == "__metadata__" else f"valid {key!r} entry in its metadata"
    else:
        missing = f"readable metadata ({type(exc).__name__}: {exc})"
    return (f"{url} is not a geoseg model file: expected a safetensors file whose metadata has "
            f"format={FORMAT!r} and a 'model' entry, but it has no {missing}. Save models with "
            "geoseg.save_model(), or give the model file a geoseg train run wrote.")


def is_torchscript(data: bytes) -> bool:
    """A TorchScript archive: a zip holding compiled ``code/``, unlike a pickled torch.save file."""
    return any("/code/" in name for name in _zip_names(data))


def _refuse_torchscript(data: bytes, url: str) -> None:
    """Refuse a TorchScript archive by name, before anything in it is read as a model: its
    ``code/`` is Python that torch compiles and runs at every forward pass."""
    if not is_torchscript(data):
        return
    raise ModelFileError(
        f"Model file {public_url(url)} is a TorchScript archive; geoseg does not load TorchScript "
        "because it runs code stored in the file. Expected a geoseg model file (safetensors "
        "weights and JSON metadata): load the weights into a registered architecture "
        "(geoseg.models.architectures()) and write it with geoseg.models.save_model(); for a "
        "network of your own, register its class first, with the "
        "@geoseg.models.register_architecture(NAME) decorator or through the 'geoseg.models' "
        "entry-point group.")


def _zip_names(data: bytes) -> list[str]:
    """The names in a zip archive; none when ``data`` is not one (or a broken one)."""
    if not data.startswith(b"PK\x03\x04"):
        return []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        return []


def _unusable(url: str, exc: ModelConfigError, saver: str) -> ModelFileError:
    """A model file whose description cannot be built (one mean per band missing, ...): the
    file is at fault, whichever format holds it."""
    return ModelFileError(f"Model file {public_url(url)} describes a model that cannot be used: "
                          f"{exc} Correct its metadata and save the model again with {saver}.")


def _too_deep(url: str, exc: NestingError) -> str:
    """Why a file whose metadata nests too deeply to decode is refused: no model description
    geoseg writes nests more than a few levels."""
    return (f"Model file {public_url(url)}: its metadata {exc} (the few levels of the model "
            "description geoseg writes). Export the model again with geoseg.save_model().")


def _declared_size(url: str, head: bytes) -> int:
    """The bytes a safetensors file holds by its header ``head``: length prefix, header, and
    its tensors' data up to the last one's end."""
    (length,) = struct.unpack("<Q", head[:8])
    try:
        table = jsontext.loads(head[8 : 8 + length])
        ends = [int(e["data_offsets"][1]) for n, e in table.items() if n != "__metadata__"]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"Model file {public_url(url)}: its safetensors header lists a "
                             f"tensor without valid data_offsets ({type(exc).__name__}); the file "
                             "is corrupt. Re-download or re-export it.") from None
    return 8 + length + max(ends, default=0)


def _read_declared(url: str, storage_options: dict[str, Any], head: bytes) -> bytes:
    """The model file, read no further than its sound header ``head`` says it reaches (its
    tensors' sizes checked against the model budgets already): a path linked to /dev/zero, or
    a file grown past its header, is never read to its end."""
    with _opened(url, storage_options) as f:
        return f.read(_declared_size(url, head))


def _check_entries(data: bytes, url: str) -> None:
    """Refuse a safetensors header listing more tensors than ``GEOSEG_MAX_MODEL_TENSORS``
    before it is parsed. Each JSON object needs a ``{`` byte, so their count bounds the tensors
    whatever escapes the header's keys use; a pickle or an archive is refused by its own name."""
    if len(data) < 8 or _pickled(data):
        return
    (length,) = struct.unpack("<Q", data[:8])
    budgets.check_model_tensors(data.count(b"{", 8, 8 + min(length, MAX_HEADER)),
                                f"Model file {public_url(url)}")


def _pickled(data: bytes) -> bool:
    """Whether ``data`` begins as a pickle (protocol 2 or later) or a torch.save zip does, and
    not as a safetensors file: a header of 128 bytes (mod 256) makes a length prefix that
    begins with the pickle's 0x80 too, but a safetensors header then opens its JSON object."""
    return data.startswith(_PICKLE_MAGIC) and data[8:9] != b"{"


def _parse_header(data: bytes, url: str) -> ModelInfo:
    _refuse_torchscript(data, url)
    _check_entries(data, url)
    try:
        (length,) = struct.unpack("<Q", data[:8])
        if length > MAX_HEADER:
            raise ValueError(f"its header declares {length:,} bytes, more than the "
                             f"{MAX_HEADER:,} any safetensors file may hold")
        if not 0 < length <= len(data) - 8:
            raise ValueError(f"its header declares {length:,} bytes where {len(data) - 8:,} "
                             "follow the length")
        meta = jsontext.loads(data[8 : 8 + length])["__metadata__"]
        if meta.get("format") != FORMAT:
            raise KeyError("format")
        return ModelInfo.from_dict(jsontext.loads(meta["model"]))
    except ModelConfigError as exc:
        raise _unusable(url, exc, "geoseg.save_model()") from None
    except NestingError as exc:
        raise ModelFileError(_too_deep(url, exc)) from None
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        if data.startswith(b"PK") and not any(n.endswith("data.pkl") for n in _zip_names(data)):
            raise ModelFileError(
                f"{url} is a zip archive but not a model: expected a geoseg model file "
                "(safetensors). Give the model file itself, not an archive holding it; unzip it "
                "first.") from None
        if _pickled(data):
            raise ModelFileError(
                f"{url} is a pickle or torch.save checkpoint; geoseg never unpickles files because that "
                "can run arbitrary code. Convert it to a geoseg model file with geoseg.save_model()."
            ) from None
        raise ModelFileError(_not_a_model(url, exc)) from None
