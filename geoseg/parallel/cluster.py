"""Where a job runs: an existing Dask cluster, or a local one started for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin


@dataclass
class TorchThreads(WorkerPlugin):
    """Pin torch's intra-op threads on each worker, so tasks on one machine don't oversubscribe it."""

    threads: int
    name: str = "geoseg-torch-threads"

    def setup(self, worker: object) -> None:
        import torch

        torch.set_num_threads(self.threads)


def scheduler_address(scheduler: str | None) -> str | None:
    """The explicit address, else ``DASK_SCHEDULER_ADDRESS``, else ``None`` (start a local cluster)."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


@contextmanager
def connect(scheduler: str | None = None, *, n_workers: int | None = None,
            threads_per_worker: int = 1) -> Iterator[Client]:
    """A client to ``scheduler``, or to a ``LocalCluster`` of worker processes started here."""
    address = scheduler_address(scheduler)
    if address:
        with Client(address) as client:
            yield client
        return
    cores = os.cpu_count() or 1
    workers = n_workers or max(1, cores // threads_per_worker)
    from importlib.util import find_spec

    dashboard = ":0" if find_spec("bokeh") else None  # on a free port, if bokeh can serve one
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                      dashboard_address=dashboard) as cluster, Client(cluster) as client:
        torch_threads = max(1, cores // (workers * threads_per_worker))
        client.register_plugin(TorchThreads(torch_threads))
        yield client
