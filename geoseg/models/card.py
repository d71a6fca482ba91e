"""A model's card: what a model file says about itself, read from its header, with its weights
checked against the sha256 the header records.

``geoseg info MODEL`` prints it, so a user can see which bands a model expects, in which
order and scale, which classes it draws in which colours, how far it looks (receptive field)
and how it was trained, before running anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from geoseg.models.header import ModelHeader
from geoseg.models.modelfile import check_weights, read_header

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ts")


def is_model_url(url: str) -> bool:
    """Whether ``url`` names a model file (``builtin:NAME`` or a model suffix), not a raster."""
    path = url.split("?", 1)[0].lower()
    return url.startswith("builtin:") or path.endswith(MODEL_SUFFIXES)


@dataclass(frozen=True)
class ModelCard:
    """The facts of a model file, each as text, with its classes and training record apart."""

    url: str
    rows: list[tuple[str, str]]
    classes: list[tuple[str, tuple[int, int, int]]]
    training: list[tuple[str, str]]


def model_card(url: str, storage_options: dict[str, Any] | None = None) -> ModelCard:
    """The card of the model file at ``url`` (a path, an fsspec URL or ``builtin:NAME``)."""
    header = read_header(url, storage_options=storage_options)
    check_weights(url, storage_options=storage_options)  # the card of a damaged file would mislead
    return ModelCard(url, _rows(header), [(c.name, c.color) for c in header.info.classes],
                     _training(header.info.extra.get("training")))


def _rows(header: ModelHeader) -> list[tuple[str, str]]:
    info = header.info
    bands = ", ".join(f"{name} (mean {m:.4g}, std {s:.4g})"
                      for name, m, s in zip(info.bands, info.mean, info.std))
    config = ", ".join(f"{k}={v}" for k, v in sorted(info.config.items()))
    return [
        ("name", info.name),
        ("architecture", f"{info.architecture} ({config})"),
        ("bands, in order", bands),
        ("normalisation", "(value - mean) / std per band, on the input's stored values"),
        ("classes", str(len(info.classes))),
        ("receptive field", f"{_axes(header.halo)} pixels each side (the default halo)"),
        ("stride", f"{_axes(header.stride)} (tiles are multiples of it)"),
        ("global context", "yes: needs the whole image in one tile" if header.global_context else "no"),
        ("parameters", f"{header.parameters:,}"),
        ("sha256", f"{info.sha256} (of the weights: checked)"),
    ]


def _axes(values: tuple[int, ...]) -> str:
    return " x ".join(str(v) for v in values)


def _training(record: Any) -> list[tuple[str, str]]:
    """The training record's settings and validation scores, flattened to (key, text) rows."""
    if not isinstance(record, dict):
        return []
    rows = [(key, str(value)) for key, value in sorted(record.items())
            if not isinstance(value, dict)]
    for name, scores in sorted((record.get("validation") or {}).items()):
        if isinstance(scores, dict):
            text = ", ".join(f"{k} {_number(v)}" for k, v in sorted(scores.items()))
        else:
            text = _number(scores)
        rows.append((f"validation {name}", text))
    return rows


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
