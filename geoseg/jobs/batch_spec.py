"""The batch spec: its inputs (a glob, a list of URLs or a catalog), the job template every
input shares, where outputs go, how many jobs run at once.

Read and checked here without the runner (:mod:`geoseg.jobs.batch` runs it), so a wrong
spec is refused before torch and dask load.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from geoseg.core.spec import Document, Name, Section, load_yaml, relative_to_spec
from geoseg.core.text import clipped
from geoseg.errors import BatchSpecError, GeosegError
from geoseg.jobs.lease import MAX_LEASE_SECONDS
from geoseg.jobs.spec import InferenceSpec, InputSpec, ModelSpec, OutputSpec, output_url_problem
from geoseg.parallel.cluster_spec import ClusterSpec

PLACEHOLDERS = ("stem", "name", "id")
MAX_CONCURRENCY = 256  # jobs a batch runs at once: each a thread, a lease and a graph here
REPORT_PLACEHOLDERS = ("run", "started")


class BatchInputs(Section):
    """Where the inputs come from: exactly one of ``glob``, ``urls`` and ``catalog``."""

    glob: str | None = Field(None, description="fsspec URL pattern: *, ?, [...], ** for any depth.")
    urls: list[str] | None = Field(None, min_length=1, description="Input paths or URLs.")
    catalog: str | None = Field(
        None, description="STAC-like JSON (FeatureCollection/ItemCollection) whose features have "
                          "an id and assets.")
    asset: str | None = Field(None, description="The asset of each catalog item to read: visual.")
    identity: Literal["auto", "checksum"] = Field(
        "auto", description="auto: ETag or size+mtime from the store; checksum: sha256 of bytes.")

    @field_validator("urls")
    @classmethod
    def _no_patterns(cls, value: list[str] | None) -> list[str] | None:
        pattern = next((url for url in value or () if _is_pattern(url)), None)
        if pattern is not None:
            raise ValueError(f"input URLs, not patterns ({pattern!r} holds *, ? or [...]): give "
                             "the pattern as inputs.glob, one job per file it matches")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BatchInputs:
        if sum(x is not None for x in (self.glob, self.urls, self.catalog)) != 1:
            raise ValueError("exactly one of glob (a URL pattern), urls (a list) or catalog (a "
                             "JSON catalog of items)")
        if (self.asset is None) != (self.catalog is None):
            raise ValueError("asset together with catalog, and only then (the key of the asset "
                             "to read from each item, e.g. asset: visual)")
        return self


class InputTemplate(InputSpec):
    """``job.input``: a job's ``input`` without ``url`` (each job's comes from ``inputs``)."""

    url: None = Field(None, description="Set per job, from inputs.")  # type: ignore[assignment]

    @field_validator("url", mode="before")
    @classmethod
    def _no_url(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("no url here: each job's input URL comes from inputs (glob, urls "
                             "or catalog)")


class OutputTemplate(OutputSpec):
    """``job.output``: a job's ``output`` without ``url`` (from ``output.url_template``)."""

    url: None = Field(None, description="Set per job.")  # type: ignore[assignment]

    @field_validator("url", mode="before")
    @classmethod
    def _no_url(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("no url here: each job's output URL comes from output.url_template")


class JobTemplate(Section):
    """What every job of the batch shares: a job spec's sections without URLs."""

    input: InputTemplate = InputTemplate()
    model: ModelSpec
    output: OutputTemplate = OutputTemplate()
    inference: InferenceSpec = InferenceSpec()


class BatchOutput(Section):
    url_template: str = Field(
        description="Output URL per input, e.g. out/{stem}.zarr; placeholders {stem}, {name} "
                    "and, for catalogs, {id}.")

    @field_validator("url_template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a template such as out/{stem}.zarr (received an empty one)")
        check_template(value, PLACEHOLDERS)
        problem = output_url_problem(value.format(stem="scene", name="scene", id="scene"))
        if problem:  # refused now, not once per input as each job's output is made
            raise ValueError(problem)
        return value


class BatchSpec(Document):
    """A whole batch: inputs, the job template, where outputs go, how many jobs at once."""

    document: ClassVar[str] = "batch spec"
    sections: ClassVar[str] = "sections (inputs, job, output, ...)"
    error: ClassVar[type[GeosegError]] = BatchSpecError

    name: Name = "batch"
    inputs: BatchInputs
    job: JobTemplate
    output: BatchOutput
    concurrency: int = Field(2, ge=1, le=MAX_CONCURRENCY,
                             description="Jobs running at once on the cluster (each a thread, a "
                                         "lease and a graph on the client).")
    report: str | None = Field(
        None, description="Where the JSON report goes ({run}, {started} allowed); default: "
                          "beside the outputs, one file per run.")
    lease_seconds: float = Field(3600.0, gt=0, le=MAX_LEASE_SECONDS, allow_inf_nan=False,
                                 description="A lease not renewed this long expires (a week at most).")
    wait: float = Field(0.0, description="Seconds to wait for an output another run holds "
                                         "(a week at most); 0: report it leased and go on.")
    cluster: ClusterSpec = ClusterSpec()

    @field_validator("wait")
    @classmethod
    def _wait_bounded(cls, value: float) -> float:
        """A wait of a week at most, as a lease: ``.inf`` or ``1e400`` would hang the batch."""
        if not 0 <= value <= MAX_LEASE_SECONDS:  # NaN too
            raise ValueError(f"seconds from 0 to {MAX_LEASE_SECONDS:g} (a week, as for "
                             "lease_seconds); 0 reports a leased output and goes on")
        return value

    @field_validator("report")
    @classmethod
    def _report_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value, REPORT_PLACEHOLDERS)
        return value

    def check(self, source: str) -> None:
        template = self.output.url_template
        if "{id}" in template and self.inputs.catalog is None:
            raise BatchSpecError(f"{source}: output.url_template {template!r} uses {{id}}, "
                                 "which only catalog items have; use {stem} or {name}, or "
                                 "inputs.catalog.")


def _is_pattern(url: str) -> bool:
    """Whether ``url`` holds a glob character in its path (an http(s) URL's ``?`` begins its
    query, as a signed URL's does)."""
    path = url.split("?", 1)[0] if url.startswith(("http://", "https://")) else url
    return any(c in path for c in "*?[")


def check_template(value: str, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless every ``{...}`` in ``value`` is a bare name from ``allowed``."""
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise BatchSpecError(f"a template with placeholders in braces ({exc})") from None
    shown = ", ".join("{" + a + "}" for a in allowed)
    for _, name, spec, conversion in parts:
        if name is not None and name not in allowed:
            raise BatchSpecError(f"placeholders {shown} only (found {{{name}}})")
        if name is not None and (spec or conversion):
            raise BatchSpecError(f"placeholders {shown} as they are, without a conversion (!r) "
                                 f"or format spec (:>10) (found {_written(name, spec, conversion)}"
                                 f"); write {{{name}}}")


def _written(name: str, spec: str, conversion: str | None) -> str:
    """A placeholder as the template wrote it (its format spec clipped)."""
    return "{" + name + (f"!{conversion}" if conversion else "") + (
        f":{clipped(spec, 20)}" if spec else "") + "}"


def load_batch(path: str | Path) -> BatchSpec:
    """Read and validate a YAML batch spec, as :func:`~geoseg.core.spec.load_yaml` reads every
    spec (``yaml.safe_load``, secrets remembered, no line of the file quoted in an error)."""
    path = Path(path)
    data = load_yaml(path, "batch spec", BatchSpecError)
    return BatchSpec.from_dict(relative_to_spec(data, path.parent), str(path))
