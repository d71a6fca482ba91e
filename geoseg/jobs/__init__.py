"""Jobs: YAML specs, validation, store-to-store runs with provenance."""

from geoseg.jobs.prepared import PreparedJob
from geoseg.jobs.runner import RunReport, prepare, run
from geoseg.jobs.spec import JobSpec, load_job

__all__ = ["JobSpec", "PreparedJob", "RunReport", "load_job", "prepare", "run"]
