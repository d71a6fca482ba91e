"""Jobs: YAML specs, validation, store-to-store runs with provenance.

The public names are resolved on first access (PEP 562), so ``geoseg.jobs.spec`` (and with it
``geoseg validate`` on a spec that is wrong) loads the spec's schema without the runner's torch
and dask.
"""

from geoseg._lazy import lazy_exports

_LAZY = {
    "JobSpec": "geoseg.jobs.spec",
    "PreparedJob": "geoseg.jobs.prepared",
    "RunReport": "geoseg.jobs.runner",
    "load_job": "geoseg.jobs.spec",
    "prepare": "geoseg.jobs.runner",
    "run": "geoseg.jobs.runner",
}

__all__ = ["JobSpec", "PreparedJob", "RunReport", "load_job", "prepare", "run"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
