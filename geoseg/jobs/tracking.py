"""Optional MLflow tracking: each run's parameters, metrics, tags and run record.

Asked for by ``tracking: {mlflow: {tracking_uri, experiment}}`` in the job spec, or
by ``MLFLOW_TRACKING_URI`` in the environment. MLflow is imported only then
(``pip install 'geoseg[mlflow]'``). The experiment is opened before any compute, so
a missing package or an unreachable store fails the job before it starts; the
MLflow run is created once the output is complete, with the run's real start and
end times, or once the run has failed or was interrupted (FAILED, KILLED; the error
under the tag ``geoseg.error``).

MLflow's own ways of talking are kept in check around every call geoseg makes into it: it does
not print its "View run at <tracking URI>" lines (they carry the URI's credentials), and its
HTTP retries are bounded
(:data:`RETRY_BOUNDS`, unless the environment sets them): their default back-off took minutes to
give up on a server gone, after the compute. An error's text never holds the URI's user info,
query or their values, however the transport quotes them.

Logged: params = the job spec (storage options hidden, URLs without credentials)
flattened to ``job.*`` keys plus the settings in effect (``resolved.*``); metrics =
throughput, seconds (total, model load, compute, per stage), pixels, chunks, class fractions
and, when the job scores against a reference, mIoU, IoU and Dice per class; tags =
model sha256, job identity, job name, geoseg version, git commit, output URL, run
record location; artifact = the run record as ``run-record.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from geoseg import config
from geoseg.core.redact import scrub, url_secrets
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
RELOG = ("To log it, run the job again (same spec, without --overwrite) once MLflow answers: the "
         "complete output is not recomputed, and that run (0 chunks computed) is logged with a run "
         "record of its own.")
QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # its "View run at <URI>" lines
# MLflow's HTTP retries, unless the environment sets them: its defaults (7 retries, back-off
# factor 2, 120 s a request) took about four minutes to give up on a server gone
RETRY_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


@dataclass
class MlflowTracker:
    """An opened MLflow experiment; :meth:`start` then :meth:`finish` log one run to it."""

    client: Any  # mlflow.tracking.MlflowClient
    tracking_uri: str
    experiment: str
    experiment_id: str
    run_id: str | None = None

    def start(self, record: dict[str, Any]) -> dict[str, Any]:
        """Create the MLflow run for ``record``; what identifies it, for the record itself. A
        tracking server that no longer takes connections is refused at once."""
        if _is_server(self.tracking_uri):
            _reachable(self, after=_left(record))
        self.run_id = _call(self, "create the run", lambda: self.client.create_run(
            self.experiment_id, start_time=_ms(record["started"]),
            run_name=str(record["job"].get("name", "geoseg"))).info.run_id, after=_left(record))
        return {**self.where(), "run_id": self.run_id}

    def where(self) -> dict[str, Any]:
        """The store and experiment, as a run record names them (no credentials)."""
        return {"tracking_uri": public_url(self.tracking_uri), "experiment": self.experiment,
                "experiment_id": self.experiment_id}

    def abandon(self) -> None:
        """End the MLflow run KILLED, if one was created, as far as the store still answers:
        the process was stopped while logging it, and a run left RUNNING would never end."""
        if self.run_id is None:
            return
        with contextlib.suppress(Exception), _quiet(self.tracking_uri):
            self.client.set_terminated(self.run_id, "KILLED")

    def finish(self, record: dict[str, Any]) -> None:
        """Log params, metrics, tags and the record as an artifact; end the run as the record
        says it ended (FINISHED; FAILED, KILLED for a run that failed or was interrupted), or
        FAILED if any of that fails, then raise :class:`TrackingError`."""
        status = ENDED.get(record.get("status"), "FINISHED")
        try:
            with _quiet(self.tracking_uri):
                self._log(record)
                self.client.set_terminated(self.run_id, status, end_time=_ms(record["finished"]))
        except Exception as exc:  # noqa: BLE001 - any MLflow or transport error
            try:
                with _quiet(self.tracking_uri):
                    self.client.set_terminated(self.run_id, "FAILED")
            except Exception:  # noqa: BLE001, S110 - the store is failing; the first error matters
                pass
            left = _left(record)
            raise TrackingError(f"MLflow at {public_url(self.tracking_uri)}: logging run "
                                f"{self.run_id} failed ({_scrub(exc, self.tracking_uri)}). "
                                f"{left[:1].upper()}{left[1:]}") from None

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
        _check_driver(tracker)
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
    server = _is_server(tracker.tracking_uri)
    if server:
        _reachable(tracker)
    if local or server:
        tracker.client = _call(tracker, "connect",
                               lambda: client_type(tracking_uri=tracker.tracking_uri))
    return tracker


DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy stores


def _check_driver(tracker: MlflowTracker) -> None:
    """Refuse a database store (``postgresql://...``) whose SQLAlchemy dialect or Python driver
    is not installed, without connecting or creating anything: SQLAlchemy imports both when an
    engine is made and connects only when it is used."""
    uri = tracker.tracking_uri
    if uri.split(":", 1)[0].split("+", 1)[0].lower() not in DATABASES:
        return
    import sqlalchemy

    try:
        sqlalchemy.create_engine(uri).dispose()
    except ImportError as exc:
        raise TrackingError(
            f"MLflow at {public_url(uri)}: the database driver cannot be loaded "
            f"({type(exc).__name__}: {_scrub(exc, uri)}). Install the driver the URI names "
            "(psycopg for postgresql://, pymysql for mysql+pymysql://, ...) where the job runs, "
            f"or give another tracking.mlflow.tracking_uri; {BEFORE_RUN}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's refusals of a URI take many types
        raise TrackingError(
            f"MLflow at {public_url(uri)}: SQLAlchemy cannot use this database URI "
            f"({type(exc).__name__}: {_scrub(exc, uri)}). Expected a URI such as "
            "sqlite:///mlflow.db or postgresql://host/db (the scheme in lower case, options "
            f"the driver takes); fix tracking.mlflow.tracking_uri; {BEFORE_RUN}") from None


def _is_server(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https")


def _reachable(tracker: MlflowTracker, after: str = BEFORE_RUN) -> None:
    """Refuse at once a tracking server whose host does not take a connection within
    ``GEOSEG_CONNECT_TIMEOUT`` seconds: MLflow's own retries, with their back-off, take minutes
    to say so (``after``: what is left then). Not tried through a proxy the environment names
    (the server may be reachable only through it)."""
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
            f"{after}") from None


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
        with _quiet(tracker.tracking_uri):
            return action()
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds (HTTP, SQL, its own)
        raise TrackingError(
            f"MLflow at {public_url(tracker.tracking_uri)}: could not {what}: "
            f"{_scrub(exc, tracker.tracking_uri)}. Check tracking.mlflow.tracking_uri (or "
            f"MLFLOW_TRACKING_URI); {after}") from None


def _left(record: dict[str, Any]) -> str:
    """What is left when logging ``record`` to MLflow fails (the runner writes the record and,
    for a complete run, finalizes the output whatever MLflow does)."""
    if record.get("status") in ENDED:
        return f"the run's own record is {record.get('run_record') or 'in the runs folder'}."
    return f"the output and its run record ({record.get('run_record')}) are complete. {RELOG}"


def _scrub(exc: BaseException | str, uri: str | None) -> str:
    """The error's text with the tracking URI in its public form, and every part of it that
    may hold a secret (user info, password, query, the query's values) hidden wherever it
    appears on its own (a transport quotes a URL's path and query apart from its host); other
    URLs lose their user info and query too."""
    text = str(exc)
    if uri:
        text = text.replace(uri, public_url(uri))
    return scrub(text, _uri_secrets(uri))[:500]


def _uri_secrets(uri: str | None) -> set[str]:
    """The parts of a tracking URI that may hold a secret: its user info (whole, and user and
    password apart), its query (whole, and each value) and its fragment."""
    if not uri or "://" not in uri:
        return set()
    found = set(url_secrets(uri))
    rest = uri.split("://", 1)[1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        info = authority.rsplit("@", 1)[0]
        found.update([info, *info.split(":", 1)])
    query, _, fragment = rest.partition("?")[2].partition("#")
    found.update([query, *(p.split("=", 1)[-1] for p in query.split("&")), fragment,
                  rest.partition("#")[2]])
    return {s for s in found if len(s) >= 4}  # shorter: it would blank out ordinary words


_quiet_lock = threading.Lock()
_quiet_state: dict[str, Any] = {"depth": 0, "saved": {}, "secrets": set()}


@contextlib.contextmanager
def _quiet(uri: str | None) -> Iterator[None]:
    """MLflow, inside, prints no "View run at <URI>" lines (they carry the URI's credentials,
    and would break a JSON log stream): :data:`QUIET` set; its HTTP retries bounded
    (:data:`RETRY_BOUNDS`, unless the environment sets them); the transport's log records
    scrubbed of the URI's secrets. Counted, so that the runs of a batch's threads share one
    such state and the last to leave restores the process's environment. Standard output is
    left alone: it is the whole process's (other threads print there)."""
    state = _quiet_state
    with _quiet_lock:
        _scrub_transport_logs()
        state["secrets"] |= _uri_secrets(uri)
        if state["depth"] == 0:
            wanted = {**{k: v for k, v in RETRY_BOUNDS.items() if k not in os.environ}, **QUIET}
            state["saved"] = {k: os.environ.get(k) for k in wanted}
            os.environ.update(wanted)
        state["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            state["depth"] -= 1
            if state["depth"] == 0:
                for key, value in state["saved"].items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                state.update(saved={}, secrets=set())


TRANSPORT_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3")


class _ScrubbedRecords(logging.Filter):
    """Hides, in the records of the HTTP transport MLflow uses, the tracking URIs' secrets and
    any URL's user info and query: urllib3 warns of each retry naming the request's path and
    query ("Retrying ... : /?token=.../api/2.0/..."), which Python prints with no handler set."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _quiet_lock:  # never held while MLflow (or urllib3) runs
            secrets = set(_quiet_state["secrets"])
        with contextlib.suppress(Exception):  # a record that cannot be formatted stays as it is
            record.msg, record.args = scrub(record.getMessage(), secrets), ()
        return True


def _scrub_transport_logs() -> None:
    """Install (once in this process) :class:`_ScrubbedRecords` on urllib3's loggers."""
    for name in TRANSPORT_LOGGERS:
        found = logging.getLogger(name)
        if not any(isinstance(f, _ScrubbedRecords) for f in found.filters):
            found.addFilter(_ScrubbedRecords())


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
