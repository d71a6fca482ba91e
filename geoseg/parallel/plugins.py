"""Per-worker state: the job's model files, loaded once per worker and freed when the job ends.

The client reads only model headers; tasks carry :class:`~geoseg.models.model.ModelRef`\\ s
(a URL and a hash). :class:`ModelPlugin` loads the weights into each worker's model cache at
setup (workers that join later load them as they join) and frees them at teardown, so a
long-lived cluster does not keep one job's networks after it, nor after a client that died
(:mod:`geoseg.parallel.disconnect`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import uuid
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

from distributed import Client
from distributed.core import clean_exception
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.protocol.pickle import dumps

from geoseg.core import redact
from geoseg.errors import ClusterConfigError, GeosegError
from geoseg.models import cache
from geoseg.models.header import ModelRef, model_refs
from geoseg.parallel.disconnect import ReleaseOnDisconnect, plugin_name
from geoseg.parallel.lost import scheduler_loss_said

logger = logging.getLogger(__name__)


@dataclass
class ModelPlugin(WorkerPlugin):
    """Loads ``refs`` into the worker's model cache (compiled with ``compile``), frees them at
    teardown. A model that cannot load on a worker fails the registration, with its error."""

    refs: tuple[ModelRef, ...]
    compile: bool = False
    client: str = ""  # the id of the client that registers it
    job: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def name(self) -> str:  # one per job: jobs sharing a cluster (and a model) keep their own
        digest = hashlib.sha256("".join(r.sha256 for r in self.refs).encode()).hexdigest()
        return plugin_name(digest[:16], self.job, self.client)

    def setup(self, worker: object) -> None:
        """Hold every model, or none: one that fails lets go of those held before it, so that a
        failed registration leaves nothing loaded on this worker."""
        self._held: list[str] = []  # this worker's copy only: what its teardown lets go of
        try:
            for ref in self.refs:
                model = cache.hold(ref)
                self._held.append(ref.sha256)
                if self.compile:
                    model.compile()
        except BaseException:
            self.teardown(worker)
            raise

    def teardown(self, worker: object) -> None:
        """Let go of what :meth:`setup` held here: nothing where it failed (or never ran)."""
        held, self._held = getattr(self, "_held", []), []
        for sha256 in held:
            cache.release(sha256)


def load_models(client: Client, ref: Any, *, compile: bool = False) -> ModelPlugin | None:
    """Register a :class:`ModelPlugin` for the model files behind ``ref`` (none: ``None``)."""
    refs = tuple(dict.fromkeys(model_refs(ref)))
    if not refs:
        return None
    plugin = ModelPlugin(refs, compile, client=client.id)
    with scheduler_loss_said(client):  # a scheduler lost now fails the run as ClusterLostError
        _release_on_disconnect(client)
        check_geoseg_on_workers(client)
        try:
            failed = _register(client, plugin)
        except (OSError, asyncio.CancelledError, CancelledError):
            raise  # the scheduler's connection: scheduler_loss_said says so
        except Exception as exc:  # noqa: BLE001 - a worker's failure, worded below
            _discard(client, plugin)
            raise _registration_failed(exc) from None
        if failed:
            _discard(client, plugin)
            raise _setup_failed(failed)
    return plugin


def check_geoseg_on_workers(client: Client) -> None:
    """Refuse a cluster where a worker cannot import geoseg, naming it: the model plugin would
    fail there with a bare ``ModuleNotFoundError`` and no address (one round trip per job)."""
    answers = client.run(_geoseg_here, on_error="return")
    broken = {worker: answer for worker, answer in answers.items() if isinstance(answer, BaseException)}
    if not broken:
        return
    worker, exc = next(iter(sorted(broken.items())))
    others = f" (and {len(broken) - 1} other worker(s))" if len(broken) > 1 else ""
    raise ClusterConfigError(
        f"Dask worker {worker}{others} cannot import geoseg ({_reason(exc)}); expected every "
        "worker to run the same geoseg installation as this client (deploy/README.md). Install "
        "geoseg, with the same version and extras, in the environment the workers start from, "
        "and restart them.")


def _geoseg_here() -> str:
    """Run on each worker: pickled by reference to this module, it fails to unpickle where
    geoseg cannot be imported; elsewhere, where the worker's geoseg lives."""
    return __file__


def _register(client: Client, plugin: ModelPlugin) -> dict[str, BaseException]:
    """Register ``plugin`` on every worker; the workers whose setup failed, with their errors.
    (``Client.register_plugin`` raises only the first error, without saying where.)"""
    responses = client.sync(client.scheduler.register_worker_plugin, plugin=dumps(plugin),
                            name=plugin.name, idempotent=False)
    failed = {}
    for worker, response in responses.items():
        if response.get("status") == "error":
            _, exc, _ = clean_exception(response["exception"], response.get("traceback"))
            failed[worker] = exc
    return failed


def _discard(client: Client, plugin: ModelPlugin) -> None:
    """Undo a failed registration: unregistered from the scheduler (workers that join later
    never run it), torn down on every worker (those where the model did load free it)."""
    try:
        client.unregister_worker_plugin(plugin.name)
    except Exception as exc:  # noqa: BLE001 - the registration's error is the one to show
        logger.info("model plugin %s not fully released after its failed registration (%s)",
                    plugin.name, type(exc).__name__)


def _setup_failed(failed: dict[str, BaseException]) -> GeosegError:
    """The error of a model that did not load on the workers ``failed``, naming the first."""
    worker, exc = next(iter(sorted(failed.items())))
    others = f" (and {len(failed) - 1} other worker(s))" if len(failed) > 1 else ""
    where = f"Dask worker {worker}{others}"
    if isinstance(exc, GeosegError) and "No model file at" in str(exc):
        return type(exc)(
            f"{where} cannot read the model file: {exc.args[0].split('. Check the path')[0]} "
            "there, though this client found it. Every worker loads the model itself: put the "
            "file at the same path on every worker (shared storage), or give a URL they all "
            "reach (s3://, gs://, https://).")
    if isinstance(exc, GeosegError):
        return type(exc)(f"{where}: {exc}")
    return ClusterConfigError(
        f"{where} could not load the job's model ({_reason(exc)}); expected every worker to "
        "load it as this client can. Check the workers' logs, memory and geoseg installation "
        "(deploy/README.md), then run again.")


def _registration_failed(exc: BaseException) -> ClusterConfigError:
    """The error of a registration that failed as a whole (a worker could not even unpickle it)."""
    return ClusterConfigError(
        f"Loading the job's model on the Dask workers failed ({_reason(exc)}); expected every "
        "worker to run the same geoseg installation as this client (deploy/README.md). Check the "
        "workers' environments and logs, then run again.")


def _reason(exc: BaseException) -> str:
    """``Type: message``, secrets scrubbed; a worker's error relayed as a bare ``Exception``
    keeps the text of the one it stands for."""
    return f"{type(exc).__name__}: {redact.scrub(str(exc))}"


def _release_on_disconnect(client: Client) -> None:
    """Have the scheduler release this client's models if it disconnects first (once per
    scheduler). A scheduler that refuses plugins still runs the job, without that safety net."""
    try:
        client.register_plugin(ReleaseOnDisconnect())
    except Exception as exc:  # noqa: BLE001 - a refusal is the scheduler's choice, the job goes on
        logger.warning("the scheduler refused geoseg's release-on-disconnect plugin (%s): a client "
                       "killed mid-job leaves its models loaded on the workers", type(exc).__name__)


def unload_models(client: Client, plugin: ModelPlugin | None) -> None:
    """Run the plugin's teardown on every worker: the models are freed. A plugin already gone
    (the scheduler released it while this client was disconnected) is no error."""
    if plugin is None:
        return
    if client.status != "running":  # lost its scheduler: that error, not this one, says why
        logger.info("model plugin %s left to the scheduler: this client lost it", plugin.name)
        return
    try:
        client.unregister_worker_plugin(plugin.name)
    except ValueError:
        logger.info("model plugin %s was already released", plugin.name)
    except OSError as exc:  # the scheduler went away meanwhile; a run's own error must show
        logger.info("model plugin %s not released (%s): the scheduler is unreachable",
                    plugin.name, type(exc).__name__)
