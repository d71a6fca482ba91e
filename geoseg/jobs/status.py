"""``status`` and ``verify``: what an output's manifest says, and whether its chunks still match it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geoseg.errors import RasterNotFoundError
from geoseg.io.output import OutputTarget, chunk_checksum, chunk_key, output_exists
from geoseg.io.stages import verify_stage
from geoseg.tiling.plan import regions

STAGES = ("instances", "edges")  # arrays added once the chunks are complete


@dataclass
class OutputStatus:
    url: str
    status: str
    n_chunks: int
    done: int
    model: str | None = None
    stages: dict[str, str] = field(default_factory=dict)  # instances, edges: their status

    @property
    def fraction(self) -> float:
        return self.done / self.n_chunks if self.n_chunks else 1.0


@dataclass
class VerifyReport:
    url: str
    checked: int
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched


def _target(url: str, storage_options: dict[str, Any] | None) -> tuple[OutputTarget, dict[str, Any]]:
    target = OutputTarget(url, dict(storage_options or {}))
    attrs = target.attrs() if output_exists(url, storage_options) else {}
    if "job_identity" not in attrs:
        raise RasterNotFoundError(f"No geoseg output at {url}: give the URL a `geoseg run` wrote to.")
    return target, attrs


def output_status(url: str, storage_options: dict[str, Any] | None = None) -> OutputStatus:
    """Progress of the run that writes ``url``, from its manifest."""
    target, attrs = _target(url, storage_options)
    stages = {name: attrs[name].get("status", "unknown") for name in STAGES if attrs.get(name)}
    return OutputStatus(url, attrs.get("status", "unknown"), int(attrs["n_chunks"]), len(target.done_keys()),
                        attrs.get("model"), stages)


def verify_output(url: str, storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """Check that every chunk is recorded and its bytes hash to the recorded sha256."""
    target, attrs = _target(url, storage_options)
    group = target.open_group(mode="r")
    classes = group["classes"]
    names = ["classes"] + (["probabilities"] if "probabilities" in group else [])
    report = VerifyReport(url, 0)
    written = tuple(attrs.get("task_region") or classes.shards or classes.chunks)  # what one task wrote
    for region in regions(classes.shape, written):
        key = chunk_key(region, written)
        recorded = target.checksum(key)
        report.checked += 1
        if recorded is None:
            report.missing.append(key)
        elif recorded != chunk_checksum(*(target.read(n, region) for n in names)):
            report.mismatched.append(key)
    for stage in STAGES:
        report.mismatched.extend(verify_stage(target, stage))
    return report
