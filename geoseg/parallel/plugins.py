"""Per-worker state: the job's model files, loaded once per worker and freed when the job ends.

The client reads only model headers; tasks carry :class:`~geoseg.models.model.ModelRef`\\ s
(a URL and a hash). :class:`ModelPlugin` loads the weights into each worker's model cache at
setup (workers that join later load them as they join) and frees them at teardown, so a
long-lived cluster does not keep one job's networks after it, nor after a client that died
(:mod:`geoseg.parallel.disconnect`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin

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
        for ref in self.refs:
            model = cache.hold(ref)
            if self.compile:
                model.compile()

    def teardown(self, worker: object) -> None:
        for ref in self.refs:
            cache.release(ref.sha256)


def load_models(client: Client, ref: Any, *, compile: bool = False) -> ModelPlugin | None:
    """Register a :class:`ModelPlugin` for the model files behind ``ref`` (none: ``None``)."""
    refs = tuple(dict.fromkeys(model_refs(ref)))
    if not refs:
        return None
    plugin = ModelPlugin(refs, compile, client=client.id)
    with scheduler_loss_said(client):  # a scheduler lost now fails the run as ClusterLostError
        _release_on_disconnect(client)
        client.register_plugin(plugin, name=plugin.name)
    return plugin


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
