"""The job spec: YAML validated once into frozen, typed objects.

Every problem is reported at once, each naming its key, what was received and
what is allowed. Relative local paths are relative to the spec file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import fsspec
from pydantic import Field, field_validator, model_validator

from geoseg.core import redact
from geoseg.core.spec import Document, Name, Section, load_yaml, relative_to_spec
from geoseg.core.urls import public_url
from geoseg.errors import GeosegError, JobSpecError, OutputLocationError
from geoseg.io import allow
from geoseg.io.readers import installed_readers
from geoseg.io.remote import READ_ONLY_PROTOCOLS
from geoseg.parallel.cluster_spec import ClusterSpec


class InputSpec(Section):
    """One raster: a Zarr array/group or a GeoTIFF/COG, read lazily window by window."""

    url: str = Field(description="Path or fsspec URL of a Zarr array/group or a GeoTIFF/COG.")
    variable: str | None = Field(None, description="Array to read inside a Zarr group.")
    bands: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=1, description="1-based band numbers to use, in model order.")
    level: int | None = Field(None, ge=0, description="Resolution level: 0 full resolution; a COG's "
                                                       "overview or an OME-Zarr multiscale level.")
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)
    pages: Literal["z", "band"] | None = Field(None, description="What the pages of a TIFF stack "
                                               "without axis metadata are (default z).")
    missing_chunks: Literal["auto", "error", "fill"] = Field(
        "auto", description="Zarr chunks the store lacks: error, fill (read as the fill value, "
                            "counted in the log) or auto (fill where the fill value is the nodata).")
    reader: str | None = Field(None, description="The reader to open it with, by name (geotiff, zarr, "
                               "nifti, ... or a plugin's); default: the first that claims the URL.")

    @field_validator("reader")
    @classmethod
    def _installed(cls, value: str | None) -> str | None:
        if value is not None and value not in installed_readers():
            raise ValueError(f"the name of an installed reader: {', '.join(installed_readers())}")
        return value


class ModelSpec(Section):
    """A deep model (``path``), a classical method (``method`` with ``params``) or an
    ``ensemble`` of such; ``tta`` wraps any of them in test-time augmentation."""

    path: str | None = Field(None, description="Model file path or URL, or builtin:NAME.")
    method: str | None = Field(None, description="Classical method, e.g. otsu, kmeans, sobel, canny.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters of the method.")
    ensemble: EnsembleSpec | None = Field(None, description="Members combined into one segmenter.")
    tta: Literal["d4", "flips"] | None = Field(None, description="Test-time augmentation.")
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSpec:
        if sum(x is not None for x in (self.path, self.method, self.ensemble)) != 1:
            raise ValueError("exactly one of path (a model file), method (a classical method) "
                             "or ensemble (members)")
        if self.params and self.method is None:
            raise ValueError("params only together with method")
        return self


class EnsembleSpec(Section):
    members: list[ModelSpec] = Field(min_length=1)
    weights: list[float] | None = None
    combine: Literal["mean", "vote", "max"] = "mean"


ModelSpec.model_rebuild()


class OutputSpec(Section):
    url: str = Field(description="Where to write the output Zarr group.")
    chunks: tuple[int, ...] | None = Field(
        None, description="Output chunk per spatial axis, (y, x) or (z, y, x); one task per chunk. "
                          "Default 1024 per axis for images, 128 for volumes.")
    shards: tuple[int, ...] | None = Field(
        None, description="Zarr v3 shard per spatial axis, a multiple of chunks: each task then writes "
                          "one whole shard (many small chunks, few objects in storage).")
    probabilities: bool = False
    nodata_class: int | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("chunks", "shards", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if isinstance(value, int | float | str):
            raise ValueError("one size per spatial axis, in a list: [1024, 1024] for an image "  # noqa: TRY004
                             "(y, x), [64, 128, 128] for a volume (z, y, x)")
        return value

    @field_validator("chunks", "shards")
    @classmethod
    def _positive(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (len(value) not in (2, 3) or min(value) < 1):
            raise ValueError("sizes >= 1, two for images (y, x) or three for volumes (z, y, x)")
        return value

    @field_validator("url")
    @classmethod
    def _writable(cls, value: str) -> str:
        problem = output_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def output_url_problem(url: str) -> str | None:
    """What an output URL should be instead (as a spec's "expected ..."), or ``None`` for one
    a job may write: not read-only, within the allowed places, no file name of an export."""
    if fsspec.utils.get_protocol(url) in READ_ONLY_PROTOCOLS:
        return ("a location geoseg can write to: a local path or a store URL such as "
                "s3://bucket/out.zarr (http:// and https:// are read-only)")
    try:
        allow.check_output_url(url)  # no '..', allowed schemes and buckets only
    except OutputLocationError as exc:
        return f"an allowed output location; {str(exc).rstrip('.')}"
    return _file_name_problem(url)


FILE_SUFFIXES = {".tif": "--cog", ".tiff": "--cog", ".nii": "--nifti", ".nii.gz": "--nifti"}


def _file_name_problem(url: str) -> str | None:
    """What to expect instead of a GeoTIFF or NIfTI file name: a job writes a Zarr store, a
    folder, and a file's name would mislead every tool that opens it by its suffix."""
    name = url.rstrip("/").rpartition("/")[2].lower()
    suffix = next((s for s in sorted(FILE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)
    if suffix is None:
        return None
    stem = url.rstrip("/")[: -len(suffix)]
    return (f"a Zarr store's URL, such as {stem}.zarr: a job writes a Zarr store (a folder of "
            f"chunks), not a {suffix} file; write {stem}.zarr, then run geoseg export {stem}.zarr "
            f"{FILE_SUFFIXES[suffix]} {url} for the file")


class InferenceSpec(Section):
    tile: int | tuple[int, ...] | None = Field(
        None, description="Tile core size: one int, or one per spatial axis, (y, x) or (z, y, x) "
                          "(default GEOSEG_TILE, GEOSEG_VOLUME_TILE for volumes).")
    halo: int | tuple[int, ...] | None = Field(
        None, description="Context per side: one int, or one per spatial axis (default: the receptive "
                          "field). Only with blend crop: blended windows overlap instead.")
    batch_size: int | None = Field(None, ge=1)
    blend: Literal["crop", "gaussian", "constant", "linear", "cosine"] | None = Field(
        None, description="crop (exact with a halo) or a blend of overlapping windows.")
    overlap: float | None = Field(None, ge=0.0, lt=1.0, description="Overlap fraction when blending.")
    compile: bool = Field(False, description="Run deep networks through torch.compile (once per worker).")

    @field_validator("tile", "halo")
    @classmethod
    def _per_axis(cls, value: int | tuple[int, ...] | None, info: Any) -> int | tuple[int, ...] | None:
        low = 1 if info.field_name == "tile" else 0
        if value is None:
            return value
        values = (value,) if isinstance(value, int) else value
        if len(values) not in (1, 2, 3) or (len(values) == 1 and values is value) or min(values) < low:
            raise ValueError(f"an int >= {low}, or one per spatial axis: two for images (y, x), three "
                             "for volumes (z, y, x)")
        return value


class InstancesSpec(Section):
    """Instance labels (one id per object over the whole raster), an object table and polygons,
    written into the output beside ``classes`` once it is complete."""

    method: Literal["auto", "components", "watershed", "decode"] = Field(
        "auto", description="decode: an instance model's interior and boundary classes; components: "
                            "connected components of classes; watershed: a distance-transform "
                            "watershed splitting touching objects; auto: decode when the model "
                            "declares a decoding, else components.")
    classes: list[str | int] | None = Field(
        None, description="Class names or ids that are objects (default: all but the nodata class).")
    connectivity: int = Field(1, ge=1, le=3, description="1: faces only (4 neighbours in 2D); "
                              "the number of axes: also edges and corners (8 in 2D, 26 in 3D).")
    halo: int | None = Field(None, ge=0, description="Pixels around a chunk a watershed sees: "
                             "default 32 (16 for decode), whatever the objects' size; watershed "
                             "needs the largest object's extent (a warning names objects that "
                             "reach past it), decode the boundary's thickness; unused by components.")
    h: float = Field(2.0, gt=0, description="watershed: depth in pixels of a distance maximum "
                     "that seeds an object; larger merges more.")
    table: bool = Field(True, description="Write the object table (instances.parquet).")
    polygons: bool = Field(True, description="Write polygons (GeoParquet and GeoJSON; images only).")


class ReferenceSpec(Section):
    """A label raster on the input's grid (one band of integer class ids) to score the output."""

    url: str = Field(description="Path or fsspec URL of a Zarr array/group or a GeoTIFF/COG.")
    variable: str | None = Field(None, description="Array to read inside a Zarr group.")
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)


class EvaluateSpec(Section):
    """Score the output against a reference: confusion matrix, IoU per class, mIoU."""

    reference: ReferenceSpec
    ignore: list[int] = Field(default_factory=list,
                              description="Label values left out of the scores (besides nodata).")


class MlflowSpec(Section):
    tracking_uri: str | None = Field(None, description="Default: MLFLOW_TRACKING_URI.")
    experiment: str = Field("geoseg", min_length=1, description="MLflow experiment name.")


class TrackingSpec(Section):
    mlflow: MlflowSpec | None = Field(None, description="Log every run to MLflow.")


class JobSpec(Document):
    """A whole job: what to read, which model, where to write, how to run."""

    document: ClassVar[str] = "job spec"
    sections: ClassVar[str] = "sections (input, model, output, ...)"
    error: ClassVar[type[GeosegError]] = JobSpecError

    name: Name = "segmentation"
    input: InputSpec
    model: ModelSpec
    output: OutputSpec
    inference: InferenceSpec = InferenceSpec()
    cluster: ClusterSpec = ClusterSpec()
    evaluate: EvaluateSpec | None = None
    instances: InstancesSpec | None = None
    tracking: TrackingSpec = TrackingSpec()
    runs_dir: str | None = Field(None, description="Folder of run records (default "
                                                   "GEOSEG_RUNS_DIR, else ~/.local/share/geoseg/runs).")

    def check(self, source: str) -> None:
        """Refuse an output where the input or the evaluation's reference is: writing there, or
        replacing it with ``--overwrite``, would destroy it (and score the output against
        itself)."""
        out = self.output
        kept = [("input", self.input)] + (
            [("evaluate.reference", self.evaluate.reference)] if self.evaluate else [])
        for what, spec in kept:
            if allow.overlapping(spec.url, spec.storage_options, out.url, out.storage_options):
                raise JobSpecError(
                    f"{source}: output.url: received {public_url(out.url)}, which is the {what} "
                    f"{public_url(spec.url)} or lies inside it (or holds it); expected a location "
                    f"apart from the {what}, which writing the output there would destroy. Choose "
                    "another output URL.")

    def redacted(self) -> dict[str, Any]:
        """The spec as plain data with every storage option's value hidden, every URL without
        user info or query (a scheduler's ``tcp://user:password@host:8786`` too), and credentials
        given by name elsewhere (a cluster's ``env``, a job script's ``export TOKEN=...``)."""
        return redact.hide_named_secrets(redact.public_urls(_redact(self.model_dump(mode="json"))))


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a YAML job spec, as :func:`~geoseg.core.spec.load_yaml` reads every
    spec (``yaml.safe_load``, secrets remembered, no line of the file quoted in an error)."""
    path = Path(path)
    data = load_yaml(path, "job spec", JobSpecError)
    return JobSpec.from_dict(relative_to_spec(data, path.parent), str(path))


def _redact(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: (f"<{len(v)} option(s) hidden>" if k == "storage_options" and isinstance(v, dict) and v
                    else _redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_redact(v) for v in data]
    return data
