"""Per-worker state: the job's model files, loaded once per worker and freed when the job ends.

The client reads only model headers; tasks carry :class:`~geoseg.models.model.ModelRef`\\ s
(a URL and a hash). :class:`ModelPlugin` loads the weights into each worker's model cache at
setup (workers that join later load them as they join) and frees them at teardown, so a
long-lived cluster does not keep one job's networks after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin

from geoseg.models import cache
from geoseg.models.header import ModelRef, model_refs


@dataclass
class ModelPlugin(WorkerPlugin):
    """Loads ``refs`` into the worker's model cache (compiled with ``compile``), frees them at
    teardown. A model that cannot load on a worker fails the registration, with its error."""

    refs: tuple[ModelRef, ...]
    compile: bool = False
    job: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def name(self) -> str:  # one per job: jobs sharing a cluster (and a model) keep their own
        digest = hashlib.sha256("".join(r.sha256 for r in self.refs).encode()).hexdigest()
        return f"geoseg-models-{digest[:16]}-{self.job}"

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
    plugin = ModelPlugin(refs, compile)
    client.register_plugin(plugin, name=plugin.name)
    return plugin


def unload_models(client: Client, plugin: ModelPlugin | None) -> None:
    """Run the plugin's teardown on every worker: the models are freed."""
    if plugin is not None:
        client.unregister_worker_plugin(plugin.name)
