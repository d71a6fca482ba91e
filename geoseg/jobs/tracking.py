"""Optional MLflow tracking: each run's parameters, metrics, tags and run record.

Asked for by ``tracking: {mlflow: {tracking_uri, experiment}}`` in the job spec, or
by ``MLFLOW_TRACKING_URI`` in the environment. MLflow is imported only then
(``pip install 'geoseg[mlflow]'``). The experiment is opened before any compute, so
a missing package or an unreachable store fails the job before it starts; the
MLflow run is created once the output is complete, with the run's real start and
end times, or once the run has failed or was interrupted (FAILED, KILLED; the error
under the tag ``geoseg.error``).

Logged: params = the job spec (storage options hidden, URLs without credentials)
flattened to ``job.*`` keys plus the settings in effect (``resolved.*``); metrics =
throughput, seconds (total, model load, compute, per stage), pixels, chunks, class fractions
and, when the job scores against a reference, mIoU, IoU and Dice per class; tags =
model sha256, job identity, job name, geoseg version, git commit, output URL, run
record location; artifact = the run record as ``run-record.json``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from geoseg import config
from geoseg.core.urls import public_url
from geoseg.errors import TrackingError

if TYPE_CHECKING:
    from geoseg.jobs.spec import JobSpec

INSTALL_HINT = "pip install 'geoseg[mlflow]'"
DEFAULT_EXPERIMENT = "geoseg"
ARTIFACT = "run-record.json"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on parameters per log_batch call
BEFORE_RUN = "nothing was computed or written."
ENDED = {"failed": "FAILED", "interrupted": "KILLED"}  # MLflow's status of a run that ended so
AFTER_RUN = ("the output is complete; run the job again to log it (finished chunks are not "
             "recomputed).")


@dataclass
class MlflowTracker:
    """An opened MLflow experiment; :meth:`start` then :meth:`finish` log one run to it."""

    client: Any  # mlflow.tracking.MlflowClient
    tracking_uri: str
    experiment: str
    experiment_id: str
    run_id: str | None = None

    def start(self, record: dict[str, Any]) -> dict[str, Any]:
        """Create the MLflow run for ``record``; what identifies it, for the record itself."""
        self.run_id = _call(self, "create the run", lambda: self.client.create_run(
            self.experiment_id, start_time=_ms(record["started"]),
            run_name=str(record["job"].get("name", "geoseg"))).info.run_id, after=AFTER_RUN)
        return {"tracking_uri": public_url(self.tracking_uri), "experiment": self.experiment,
                "experiment_id": self.experiment_id, "run_id": self.run_id}

    def finish(self, record: dict[str, Any]) -> None:
        """Log params, metrics, tags and the record as an artifact; end the run as the record
        says it ended (FINISHED; FAILED, KILLED for a run that failed or was interrupted), or
        FAILED if any of that fails, then raise :class:`TrackingError`."""
        status = ENDED.get(record.get("status"), "FINISHED")
        try:
            self._log(record)
            self.client.set_terminated(self.run_id, status, end_time=_ms(record["finished"]))
        except Exception as exc:  # noqa: BLE001 - any MLflow or transport error
            try:
                self.client.set_terminated(self.run_id, "FAILED")
            except Exception:  # noqa: BLE001, S110 - the store is failing; the first error matters
                pass
            left = (f"The output and its run record ({record.get('run_record')}) are complete; "
                    "run the job again to log it (finished chunks are not recomputed)."
                    if status == "FINISHED" else
                    f"The run's own record is {record.get('run_record')}.")
            raise TrackingError(f"MLflow at {public_url(self.tracking_uri)}: logging run "
                                f"{self.run_id} failed ({_scrub(exc, self.tracking_uri)}). "
                                f"{left}") from None

    def _log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        stamp = _ms(record["finished"])
        items = [Param(k, v) for k, v in params(record).items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_BATCH])
        self.client.log_batch(self.run_id,
                              metrics=[Metric(k, v, stamp, 0) for k, v in metrics(record).items()],
                              tags=[RunTag(k, v) for k, v in tags(record).items()])
        self.client.log_dict(self.run_id, json.loads(json.dumps(record, default=str)), ARTIFACT)


def settings(spec: JobSpec) -> tuple[str | None, str] | None:
    """``(tracking_uri, experiment)`` when this job is to be logged, else ``None``; a ``None``
    URI leaves MLflow's own default."""
    wanted, env = spec.tracking.mlflow, os.environ.get("MLFLOW_TRACKING_URI") or None
    if wanted is None:
        return None if env is None else (env, DEFAULT_EXPERIMENT)
    return wanted.tracking_uri or env, wanted.experiment


def open_tracker(spec: JobSpec) -> MlflowTracker | None:
    """Open (or create) the MLflow experiment the job logs to; ``None`` when it logs nowhere."""
    tracker = _connected(spec, local=True)
    if tracker is not None:
        tracker.experiment_id = _call(tracker, f"open experiment {tracker.experiment!r}",
                                      lambda: _experiment_id(tracker.client, tracker.experiment))
    return tracker


def check_tracking(spec: JobSpec) -> str | None:
    """What ``geoseg validate`` says of the job's MLflow tracking, checked without writing:
    mlflow can be imported, and an HTTP(S) tracking server answers with the experiment not
    deleted; ``None`` when the job logs nowhere. A local store (a folder, a SQLite file) is
    made by the run's first use of it, so only the import is checked for it."""
    tracker = _connected(spec, local=False)
    if tracker is None:
        return None
    where = f"MLflow at {public_url(tracker.tracking_uri)}, experiment {tracker.experiment!r}"
    if tracker.client is None:
        return f"{where} (a store the run creates if it is not there)"
    found = _call(tracker, f"look up experiment {tracker.experiment!r}",
                  lambda: tracker.client.get_experiment_by_name(tracker.experiment))
    _refuse_deleted(found, tracker.experiment)
    return f"{where} ({'found' if found is not None else 'created by the run'})"


def _connected(spec: JobSpec, *, local: bool) -> MlflowTracker | None:
    """The job's tracker, mlflow imported and its client made (for a local store only when
    ``local``: making one creates it); ``None`` when the job logs nowhere."""
    wanted = settings(spec)
    if wanted is None:
        return None
    uri, experiment = wanted
    mlflow, client_type = _import_mlflow()
    tracker = MlflowTracker(None, uri or mlflow.get_tracking_uri(), experiment, "")
    server = tracker.tracking_uri.split(":", 1)[0].lower() in ("http", "https")
    if server:
        _reachable(tracker)
    if local or server:
        tracker.client = _call(tracker, "connect",
                               lambda: client_type(tracking_uri=tracker.tracking_uri))
    return tracker


def _reachable(tracker: MlflowTracker) -> None:
    """Refuse at once a tracking server whose host does not take a connection within
    ``GEOSEG_CONNECT_TIMEOUT`` seconds: MLflow's own retries, with their back-off, take minutes
    to say so. Not tried through a proxy the environment names (the server may be reachable
    only through it)."""
    import socket
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(tracker.tracking_uri)
    if parts.hostname is None or urllib.request.getproxies().get(parts.scheme.lower()) \
            and not urllib.request.proxy_bypass(parts.hostname):
        return
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    timeout = config.number("GEOSEG_CONNECT_TIMEOUT", "seconds to wait for a connection",
                            above=True)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        said = exc.strerror or type(exc).__name__  # a timeout has no strerror
        raise TrackingError(
            f"MLflow at {public_url(tracker.tracking_uri)}: could not connect to "
            f"{parts.hostname}:{port} within {timeout:g} s ({said}). Check that the tracking "
            "server runs and tracking.mlflow.tracking_uri (or MLFLOW_TRACKING_URI) names it; "
            f"{BEFORE_RUN}") from None


def _import_mlflow() -> tuple[Any, Any]:
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(
            "MLflow tracking is asked for (tracking.mlflow in the job spec, or MLFLOW_TRACKING_URI "
            f"in the environment) but mlflow is not installed. Install it with {INSTALL_HINT}, or "
            "remove tracking.mlflow from the spec and unset MLFLOW_TRACKING_URI.") from None
    return mlflow, MlflowClient


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name)
        except Exception:  # another run created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    _refuse_deleted(found, name)
    return found.experiment_id


def _refuse_deleted(found: Any, name: str) -> None:
    """Raise :class:`TrackingError` if the experiment ``found`` (or ``None``) is deleted."""
    if found is not None and found.lifecycle_stage == "deleted":
        # a TrackingError passes _call unchanged, so it says itself what is left
        raise TrackingError(f"MLflow experiment {name!r} is deleted; restore it in MLflow or "
                            f"choose another tracking.mlflow.experiment; {BEFORE_RUN}")


def _call(tracker: MlflowTracker, what: str, action: Any, after: str = BEFORE_RUN) -> Any:
    """``action()``, any failure turned into a :class:`TrackingError` that names the store and
    says what ``after`` the failure is left."""
    try:
        return action()
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds (HTTP, SQL, its own)
        raise TrackingError(
            f"MLflow at {public_url(tracker.tracking_uri)}: could not {what}: "
            f"{_scrub(exc, tracker.tracking_uri)}. Check tracking.mlflow.tracking_uri (or "
            f"MLFLOW_TRACKING_URI); {after}") from None


def _scrub(exc: BaseException, uri: str) -> str:
    """The error's text with the tracking URI in its public form (no user info or query)."""
    text = str(exc).replace(uri, public_url(uri)) if uri else str(exc)
    return text[:500]


def params(record: dict[str, Any]) -> dict[str, str]:
    """The redacted job spec under ``job.*`` and the settings in effect under ``resolved.*``."""
    flat = {**flatten(record["job"], "job"), **flatten(record.get("resolved", {}), "resolved")}
    return {_key(k): v[:MAX_PARAM_LENGTH] for k, v in flat.items()}


def flatten(data: dict[str, Any], prefix: str) -> dict[str, str]:
    """Nested mappings to dotted keys; lists and scalars become their JSON text."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return flat


def metrics(record: dict[str, Any]) -> dict[str, float]:
    """Throughput, seconds, pixels, chunks, class fractions and scores, as MLflow metrics; a
    failed run's record has its seconds and chunks only."""
    timings, chunks = record["timings"], record["chunks"]
    found: dict[str, float | None] = {
        "throughput_mpx_per_s": record["throughput_mpx_per_s"],
        "seconds_total": timings["total_s"], "seconds_compute": timings["compute_s"],
        "seconds_model_load": timings.get("model_load_s"),
        **{f"seconds_{k}": v for k, v in timings.get("task_stage_sums_s", {}).items()},
        "pixels": record["pixels"], "chunks_computed": chunks["computed"],
        "chunks_skipped": chunks["skipped_as_done"],
    }
    counted = sum(record.get("class_counts", {}).values())
    for name, count in record.get("class_counts", {}).items():
        found[f"class_fraction/{name}"] = count / counted if counted else None
    evaluation = record.get("evaluation")
    if evaluation is not None:
        found["miou"] = evaluation["miou"]
        found["pixels_scored"] = evaluation["pixels_scored"]
        found.update({f"iou/{k}": v for k, v in evaluation["iou"].items()})
        found.update({f"dice/{k}": v for k, v in evaluation["dice"].items()})
    return {_key(k): float(v) for k, v in found.items() if v is not None}


def tags(record: dict[str, Any]) -> dict[str, str]:
    """Model hash, job identity and where the output and its record are."""
    model, git = record["model"], record.get("git")
    found = {
        "geoseg.model_sha256": model.get("sha256") or model.get("id"),
        "geoseg.model_name": model.get("name"),
        "geoseg.job_name": record["job"].get("name"),
        "geoseg.job_identity": record["job_identity"],
        "geoseg.version": record["geoseg_version"],
        "geoseg.output": record["output"]["url"],
        "geoseg.run_record": record.get("run_record"),
        "geoseg.git_commit": git["commit"] if git else None,
        "geoseg.git_dirty": str(git["dirty"]).lower() if git else None,
        "geoseg.error": record.get("error"),  # what ended a failed or interrupted run
    }
    return {k: str(v) for k, v in found.items() if v is not None}


def _key(name: str) -> str:
    """An MLflow-safe key: letters, digits, ``_ - . / `` and spaces only."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)[:250]


def _ms(stamp: str) -> int:
    """Milliseconds since the epoch of an ISO time (now when it cannot be parsed)."""
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000)
    except (TypeError, ValueError):
        return int(time.time() * 1000)
