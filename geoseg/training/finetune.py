"""Fine-tuning: a training run that starts from a model file (``model.init``).

The network (the file's architecture and config) is built for the data's bands and classes,
then every tensor of the file is loaded into it but those that depend on the number of
classes (when the file's classes are not ``data.classes``, in order) or of bands (when their
number differs), which keep their seeded initialisation. Which tensors depend on what is found
without knowing the architecture: the network is built on torch's meta device with one class,
and one band, more. The file is read as any model file (safetensors, its sha256 checked).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from geoseg.core.classes import short_list
from geoseg.core.urls import public_url
from geoseg.errors import CheckpointError, GeosegError, TrainSpecError
from geoseg.models import ModelInfo, build_network
from geoseg.models.header import ModelHeader
from geoseg.models.modelfile import load_model, read_header
from geoseg.training.checkpoint import Checkpoint
from geoseg.training.spec import TrainSpec, two_d_architectures

Log = Callable[[str], Any]


@dataclass(frozen=True)
class InitModel:
    """The model file a fine-tuning run starts from (``model.init``), as its header describes it."""

    url: str
    header: ModelHeader
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def info(self) -> ModelInfo:
        return self.header.info

    @property
    def sha256(self) -> str:
        return self.header.info.sha256

    @property
    def public_url(self) -> str:
        return public_url(self.url)


@dataclass(frozen=True)
class Started:
    """What starting from ``init`` did, as the run record says it: the tensors loaded, and
    those that started fresh (``fresh``: groups with ``depends_on``, ``tensors``, ``reason``)."""

    init: InitModel
    record: dict[str, Any]

    @property
    def info(self) -> ModelInfo:
        return self.init.info

    @property
    def public_url(self) -> str:
        return self.init.public_url

    @property
    def bands_loaded(self) -> bool:
        """Whether the tensors that depend on the bands (the first layer) came from the file."""
        return all(group.get("depends_on") != "bands" for group in self.record.get("fresh", []))


def read_init(spec: TrainSpec) -> InitModel | None:
    """The header of ``model.init``'s file (none without it): read, checked against the model
    budgets and its declared tensors, weights not yet read (:func:`read_header`)."""
    if spec.model.init is None:
        return None
    try:
        options = dict(spec.model.storage_options)
        return InitModel(spec.model.init, read_header(spec.model.init, storage_options=options),
                         options)
    except GeosegError as exc:
        raise _init_error(exc) from None


def _init_error(exc: GeosegError) -> GeosegError:
    """``exc``, of its own type, naming the spec key it is about."""
    return type(exc)(f"model.init: {exc}")


def network_of(spec: TrainSpec, init: InitModel | None) -> tuple[str, dict[str, Any]]:
    """The architecture and config to build (without in_channels and num_classes): the spec's,
    or with ``model.init`` the file's, which the spec may restate but not change."""
    if init is None:
        return spec.model.architecture, dict(spec.model.config)
    info = init.info
    file_config = {k: v for k, v in info.config.items() if k not in ("in_channels", "num_classes")}
    for key, theirs in (("architecture", info.architecture), ("config", file_config)):
        mine = getattr(spec.model, key)
        if key in spec.model.model_fields_set and mine != theirs:
            raise TrainSpecError(
                f"model.{key}: received {mine!r}; expected {theirs!r}, the {key} of model.init "
                f"{init.public_url} ({info.architecture} {file_config}), whose weights this run "
                f"fine-tunes. Remove model.{key} (it defaults to the file's), or remove model.init "
                "to train the network the spec describes from random weights.")
    if info.architecture not in two_d_architectures():
        raise TrainSpecError(
            f"model.init: {init.public_url} holds a {info.architecture!r} network; expected one "
            f"of the 2D architectures geoseg train fits: {', '.join(two_d_architectures())}.")
    return info.architecture, file_config


def start_from(spec: TrainSpec, init: InitModel | None, net: nn.Module, architecture: str,
               net_config: dict[str, Any], checkpoint: Checkpoint | None, log: Log,
               band_names: Sequence[str] = ()) -> Started | None:
    """Load ``init``'s weights into ``net`` (freshly built from the seed): all but the tensors
    that depend on the classes when the file's are not data.classes, and on the bands when their
    number differs, which keep their fresh values. Resuming, the checkpoint's weights win: the
    file is not read again, and what its first start did is taken from the checkpoint."""
    if init is None:
        return None
    if checkpoint is not None:
        return Started(init, checkpoint.state.data.get("init") or {})
    weights = init_weights(init)
    fresh = _fresh_tensors(spec, init.info, architecture, net_config)
    skip = {name for group in fresh for name in group["tensors"]}
    state = net.state_dict()
    _check_loadable(init, state, weights, skip)
    net.load_state_dict({**state, **{k: weights[k] for k in state if k not in skip}}, strict=True)
    record = {"url": init.public_url, "sha256": init.sha256, "architecture": architecture,
              "tensors": len(state), "loaded": len(state) - len(skip), "fresh": fresh}
    log(f"{spec.name}: starting from model.init {init.public_url} ({record['loaded']} of "
        f"{len(state)} tensors loaded)")
    for group in fresh:
        names = group["tensors"]
        log(f"{spec.name}: {len(names)} tensor(s) that depend on the number of {group['depends_on']} "
            f"({short_list(names, 4)}) start fresh: {group['reason']}")
    if not any(group["depends_on"] == "bands" for group in fresh):
        _warn_band_names(spec, init.info.bands, band_names, log)
    return Started(init, record)


GENERIC_BAND = re.compile(r"band_?\d+", re.IGNORECASE)  # names that say nothing of a band


def _warn_band_names(spec: TrainSpec, theirs: Sequence[str], ours: Sequence[str], log: Log) -> None:
    """Say when the first layer, loaded band for band, meets bands named otherwise than the
    file's (both named, not band_1, band_2...): the same bands in another order, or others."""
    named = [list(names) for names in (theirs, ours)
             if names and not any(GENERIC_BAND.fullmatch(str(n)) for n in names)]
    if len(named) == 2 and named[0] != named[1]:
        log(f"{spec.name}: warning: model.init's network was trained on bands "
            f"[{short_list(named[0])}], in that order, and the images' bands are "
            f"[{short_list(named[1])}]; its first layer takes them in the images' order. If they "
            "are the same bands, select them in the file's order (data.train[].image.bands).")


def init_weights(init: InitModel) -> dict[str, torch.Tensor]:
    """The file's tensors, read as :func:`load_model` reads any model file (safetensors, its
    sha256 checked against the header read first), leaving torch's random state as it was."""
    try:
        with torch.random.fork_rng(devices=[]):  # building the file's network draws weights
            model = load_model(init.url, storage_options=init.storage_options, device="cpu",
                               expected_sha256=init.sha256)
    except GeosegError as exc:
        raise _init_error(exc) from None
    return model.net.state_dict()


def _fresh_tensors(spec: TrainSpec, info: ModelInfo, architecture: str,
                   net_config: dict[str, Any]) -> list[dict[str, Any]]:
    """The groups of tensors that cannot come from the file, each with why."""
    by_classes, by_bands = dependent_tensors(architecture, net_config)
    ours, theirs = [c.name for c in spec.data.classes], [c.name for c in info.classes]
    n_bands, fresh = net_config["in_channels"], []
    if ours != theirs:
        fresh.append({"depends_on": "classes", "tensors": by_classes,
                      "reason": f"the file's classes [{short_list(theirs)}] differ from "
                                f"data.classes [{short_list(ours)}]"})
    if len(info.bands) != n_bands:
        fresh.append({"depends_on": "bands", "tensors": by_bands,
                      "reason": f"the file's network takes {len(info.bands)} band(s) "
                                f"[{short_list(list(info.bands))}], the images have {n_bands}"})
    return fresh


def dependent_tensors(architecture: str, net_config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Names of the tensors whose shape depends on the number of classes, and of those that
    depend on the number of bands, whatever the architecture: the network of ``net_config`` built
    on torch's meta device (shapes only) against the same with one class more, one band more."""
    base, n_classes, n_bands = (_shapes(architecture, net_config), net_config["num_classes"],
                                net_config["in_channels"])
    more_classes = _shapes(architecture, {**net_config, "num_classes": n_classes + 1})
    more_bands = _shapes(architecture, {**net_config, "in_channels": n_bands + 1})
    return ([n for n in base if more_classes.get(n) != base[n]],
            [n for n in base if more_bands.get(n) != base[n]])


def _shapes(architecture: str, net_config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = build_network(architecture, net_config)
    return {name: tuple(t.shape) for name, t in net.state_dict().items()}


def _check_loadable(init: InitModel, state: dict[str, torch.Tensor],
                    weights: dict[str, torch.Tensor], skip: set[str]) -> None:
    """Refuse a file lacking, or shaping otherwise, a tensor that does not depend on the data."""
    wrong = [f"{name}: the network has {tuple(t.shape)}, the file "
             f"{tuple(weights[name].shape) if name in weights else 'none'}"
             for name, t in state.items()
             if name not in skip and (name not in weights or weights[name].shape != t.shape)]
    if wrong:
        raise TrainSpecError(
            f"model.init: {len(wrong)} tensor(s) of {init.public_url} do not fit the network to "
            f"train ({'; '.join(wrong[:3])}); expected every tensor but those that depend on the "
            "number of classes or bands to have the file's name and shape. Fine-tune the file's "
            "architecture and config, or remove model.init to train from random weights.")


def check_same_init(recorded: dict[str, Any] | None, init: InitModel | None, run_dir: str) -> None:
    """Refuse to go on with a run whose model.init file now holds other weights than those it
    started from (the spec names the file, so a changed URL is already a changed spec)."""
    if init is None or not recorded or recorded.get("sha256") == init.sha256:
        return
    raise CheckpointError(
        f"{run_dir} belongs to a run that started from model.init {recorded.get('url')} with "
        f"weights of sha256 {str(recorded.get('sha256'))[:16]}..., but {init.public_url} now holds "
        f"weights of sha256 {init.sha256[:16]}... (the file was replaced); resuming would mix two "
        "starting points. Put the original file back, use a new output.run_dir (or output.model), "
        "or start over with output.overwrite: true (--overwrite).")
