"""Bulk inference over catalogs of events: ``mulens-sbi catalog INPUT --model roman --out DIR``.

* :mod:`.inputs` — a folder of event files/manifests or parquet light curves → ordered event refs;
* :mod:`.infer` — :class:`BatchInference`: batched flow sampling, importance sampling with the exact
  multi-dataset likelihood, summaries, modes, degeneracy class; one row per event, bad events
  recorded with a reason;
* :mod:`.run` — :func:`run_catalog`: resumable shards, local engine or Ray Data, the final table.

See ``docs/catalog.md``.
"""

from mulens_sbi.catalog.infer import PARAMS, SCHEMA, BatchInference, InferenceSettings
from mulens_sbi.catalog.inputs import EventRef, list_inputs
from mulens_sbi.catalog.run import CatalogSettings, read_catalog, run_catalog

__all__ = [
    "PARAMS",
    "SCHEMA",
    "BatchInference",
    "CatalogSettings",
    "EventRef",
    "InferenceSettings",
    "list_inputs",
    "read_catalog",
    "run_catalog",
]
