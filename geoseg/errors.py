"""Every exception geoseg raises on purpose.

Each one also subclasses the built-in it refines (``FileNotFoundError``,
``ValueError``, ...), so plain ``except`` clauses keep working. Messages say what
was received, what was expected and how to fix it; they never contain storage
credentials.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Base class of every error geoseg raises on purpose."""


class RasterNotFoundError(GeosegError, FileNotFoundError):
    """The input URL points at nothing."""


class UnsupportedFormatError(GeosegError, ValueError):
    """The input exists but is not a format geoseg reads."""


class BucketNotFoundError(GeosegError, FileNotFoundError):
    """The bucket (or container) an input or output URL names does not exist."""


class StorageAccessError(GeosegError, PermissionError):
    """The store refused access: credentials rejected, or not allowed to read or write there."""


class StorageUnavailableError(GeosegError, ConnectionError):
    """The store kept failing with transient errors (timeouts, resets, 5xx, throttling)
    after every retry."""


class ReadOnlyStorageError(GeosegError, ValueError):
    """An output URL on a read-only protocol (``http://``, ``https://``)."""


class RangeRequestsError(GeosegError, ValueError):
    """An HTTP server that answers a request for part of a file with all of it (no ``Range``
    support): geoseg reads rasters in parts, never whole."""


class BandMismatchError(GeosegError, ValueError):
    """The raster's bands do not match what the model expects."""


class ModelFileError(GeosegError, ValueError):
    """A model file is missing, malformed, or fails its integrity check."""


class PlanError(GeosegError, ValueError):
    """Tiling parameters that cannot produce a valid plan."""


class JobSpecError(GeosegError, ValueError):
    """A job spec that does not validate; the message lists every problem."""


class OutputExistsError(GeosegError, FileExistsError):
    """The output already exists and overwriting was not asked for."""


class ChunkResultError(GeosegError, RuntimeError):
    """A task returned a block of the wrong shape or dtype, or a run ended with output chunks
    its manifest does not record as written (the output is then not marked complete)."""


class ClusterConfigError(GeosegError, ValueError):
    """A cluster kind or setting that cannot start or reach a cluster (``--cluster``,
    ``cluster:``)."""


class MissingExtraError(GeosegError, ImportError):
    """An optional dependency is needed; the message names the ``pip install geoseg[...]`` extra."""


class TrainSpecError(JobSpecError):
    """A training or sweep spec that does not validate; the message lists every problem."""


class TrainingDataError(GeosegError, ValueError):
    """Training rasters that cannot be used as given (shapes, bands, label values, sizes)."""


class CheckpointError(GeosegError, ValueError):
    """A run folder whose checkpoint is corrupt, or belongs to a different spec: the input is at
    fault (the command exits 2), as for a job's output made by another job."""


class TrainingDivergedError(GeosegError, RuntimeError):
    """The loss became NaN or infinite."""


class EnsembleError(GeosegError, ValueError):
    """Members that cannot be combined (classes, bands, dimensions or weights disagree)."""


class BatchSpecError(JobSpecError):
    """A batch spec that does not validate, or inputs that cannot make a batch (none, or two
    writing the same output); the message lists every problem."""


class LeaseLostError(GeosegError, RuntimeError):
    """Another run took over the lease on an output this run was writing."""


class ExportError(GeosegError, ValueError):
    """An output that cannot be exported as asked: unfinished, of the wrong dimensionality for
    the format, not matching the image it should label, or with settings that alter class ids."""


class EvaluationError(GeosegError, ValueError):
    """A reference label raster that cannot score the output (grid, bands or dtype differ)."""


class TrackingError(GeosegError, RuntimeError):
    """Experiment tracking (MLflow) is asked for but missing, unreachable or failing."""


class SettingError(GeosegError, ValueError):
    """A runtime setting (a ``GEOSEG_*`` variable or a command-line option) with a bad value."""


class InstanceError(GeosegError, ValueError):
    """A mask, connectivity or instance setting that cannot give instances (dimensions, dtype)."""


class OutputBusyError(GeosegError, RuntimeError):
    """Another live run holds the lease on the output this run would write."""


class BudgetError(GeosegError, ValueError):
    """A figure an input, a job or a model file declares (pixels, tasks, bytes per read window,
    model parameters or memory) over its limit; the message names the ``GEOSEG_*`` setting
    that raises it."""


class CorruptInputError(GeosegError, ValueError):
    """Input pixels or metadata that cannot be decoded (a truncated file, a corrupt chunk, broken
    metadata); the message names the file and the chunk or window."""


class NestingError(GeosegError, ValueError):
    """A JSON document nested deeper than geoseg decodes (:mod:`geoseg.core.jsontext`); the
    message says how deep. Callers name the file it came from."""


class NestedMetadataError(CorruptInputError):
    """A Zarr metadata document nested deeper than any Zarr metadata is (a decoder would reach
    the recursion limit)."""


class CorruptOutputError(GeosegError, ValueError):
    """A stored chunk of an output that no longer decodes; the message names the array and
    chunk, and how to recompute it (``geoseg verify --repair``, then the job again)."""


class StorageIOError(GeosegError, OSError):
    """The store failed a read or write for good: disk full, quota exceeded, an I/O error."""


class OutputLocationError(GeosegError, ValueError):
    """An output URL outside the allowed places: a ``..`` segment, a scheme not in
    ``GEOSEG_OUTPUT_SCHEMES``, a bucket not in ``GEOSEG_OUTPUT_BUCKETS``."""


class WorkerCrashError(GeosegError, RuntimeError):
    """Output chunks whose task killed every worker process that ran it (out of memory, a crash in
    native code, ``os._exit``); the message names the chunks. Every other chunk was written."""


class ClusterLostError(GeosegError, ConnectionError):
    """The client lost its Dask scheduler during a run (killed, restarted or unreachable); the
    chunks already written are kept and a rerun resumes."""


class ParameterError(GeosegError, ValueError):
    """An argument of a public function outside what it accepts (an output kind, a chunking, a
    synthetic scene's size or seed); the message names the argument, the value and what is
    allowed."""


class MethodParameterError(ParameterError):
    """A classical method's parameter outside what it accepts (thresholds not increasing, a
    k-means ``n_init`` below 1, an unknown operator, a negative sigma)."""


class ModelConfigError(GeosegError, ValueError):
    """A network or model description that cannot be built as given (depth, width, backbone,
    one normalisation mean and std per band, an architecture name taken twice)."""


class DeviceMemoryError(GeosegError, MemoryError):
    """A region's inference ran out of its device's memory (a GPU's, or the host's when torch
    cannot allocate): the message names the batch and window it tried, and the settings that
    make them smaller (``GEOSEG_BATCH_SIZE``, the tile)."""
