"""A faithful fake of the Codat API, for tests, the demo and benchmarks.

It serves Codat's endpoints (companies, connections, dataStatus, refresh queueing, every list
endpoint of :mod:`airflow_provider_codat.data_types`, company info and financial reports) over real
HTTP, with Codat's paging envelope, query language, error bodies and rate-limit headers, and data
that is deterministic from a seed. Faults (429s, 5xx, dropped connections, truncated bodies, slow
answers, concurrency limits, records changing while a client pages) are knobs, settable at start
or at run time.

Pieces:

* :class:`FakeCodatConfig` (:mod:`.config`): every knob, documented.
* :class:`FakeCodat` (:mod:`.fake`): the state, and the Python API tests use to know the truth
  (``records()``, ``company_ids()``, ``connections()``) and change it (``modify_records()``,
  ``add_records()``, ``delete_records()``, ``set_unsynced()``, ``set_unsupported()``).
* :func:`create_app` (:mod:`.app`): the FastAPI app, with admin endpoints under ``/_fake/``.
* :class:`FakeCodatServer` (:mod:`.server`): runs it in a background thread on a free port.
* :func:`main`: ``python -m airflow_provider_codat.testing.fake_codat --port 8080``.

Needs the ``fake`` extra (FastAPI, uvicorn; both ship with Airflow 3) and msgspec.
"""

from __future__ import annotations

from airflow_provider_codat.testing.fake_codat.app import create_app
from airflow_provider_codat.testing.fake_codat.cli import main
from airflow_provider_codat.testing.fake_codat.config import DEFAULT_API_KEY, FakeCodatConfig
from airflow_provider_codat.testing.fake_codat.fake import CodatHTTPError, FakeCodat
from airflow_provider_codat.testing.fake_codat.server import FakeCodatServer

__all__ = [
    "DEFAULT_API_KEY",
    "CodatHTTPError",
    "FakeCodat",
    "FakeCodatConfig",
    "FakeCodatServer",
    "create_app",
    "main",
]
