"""Foundations: what every layer of geoseg may use, with no torch, dask or zarr.

* :mod:`geoseg.core.urls`: URLs in their public form (no user info, query or fragment);
* :mod:`geoseg.core.redact`: secrets kept out of messages, logs and records;
* :mod:`geoseg.core.spec`: the base of every YAML spec, validated at once with every problem
  reported;
* :mod:`geoseg.core.records`: timestamps, package versions and JSON for run records;
* :mod:`geoseg.core.jsontext`: JSON from files geoseg did not write, its nesting bounded;
* :mod:`geoseg.core.segmenter`: the contract every segmenter implements, and its classes.

The errors (:mod:`geoseg.errors`), the settings (:mod:`geoseg.config`) and the log
(:mod:`geoseg.logs`) belong to this layer too; tests/test_layers.py lists the layers.
"""

from geoseg._lazy import lazy_exports

__all__ = ["classes", "jsontext", "records", "redact", "segmenter", "spec", "urls"]  # its modules, imported on first use

__getattr__, __dir__ = lazy_exports(__name__, {})
