"""pytest fixtures for the fake Codat API, usable in this project's tests and in users' own.

Enable them in a ``conftest.py``::

    pytest_plugins = ["airflow_provider_codat.testing.pytest_plugin"]

Fixtures:

* ``fake_codat`` (function scope): a :class:`~airflow_provider_codat.testing.fake_codat.FakeCodat`
  served over HTTP and reset to its defaults for this test. It has ``.url``, ``.api_key``,
  ``.configure(**knobs)``, ``.stats()``, ``.reset()`` and the truth API (``.company_ids()``,
  ``.connections()``, ``.records()``, ``.modify_records()``, ``.set_unsynced()``, ...). One server
  runs per test session (per xdist worker); each test gets it freshly reset, which is cheap unless
  a test changed the data.
* ``codat_conn_env``: sets ``AIRFLOW_CONN_CODAT_DEFAULT`` to a connection pointing at the fake
  (``{"conn_type": "codat", "password": <key>, "host": <url>}``) and returns its JSON.
* ``fake_codat_server`` (session scope): the :class:`FakeCodatServer` behind ``fake_codat``.

Knobs for one test can also come from a marker, applied after the reset::

    @pytest.mark.fake_codat(companies=3, records={"invoices": 500}, latency_ms=20)
    def test_something(fake_codat): ...

Outside pytest (the demo, benchmarks), use :class:`FakeCodatServer` directly; it is re-exported
here::

    with FakeCodatServer(companies=10) as server:
        print(server.url, server.fake.company_ids())
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_codat.testing.fake_codat import FakeCodat, FakeCodatConfig, FakeCodatServer

__all__ = ["FakeCodat", "FakeCodatConfig", "FakeCodatServer", "codat_conn_env", "fake_codat", "fake_codat_server"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fake_codat(**knobs): knobs for the fake Codat API in this test")


@pytest.fixture(scope="session")
def fake_codat_server() -> Iterator[FakeCodatServer]:
    """The fake Codat API server shared by the session's tests."""
    with FakeCodatServer() as server:
        yield server


@pytest.fixture
def fake_codat(fake_codat_server: FakeCodatServer, request: pytest.FixtureRequest) -> Iterator[FakeCodat]:
    """The fake Codat API, reset for this test (and configured by its ``fake_codat`` marker)."""
    fake = fake_codat_server.fake
    fake.reset()
    marker = request.node.get_closest_marker("fake_codat")
    if marker is not None:
        fake.configure(**marker.kwargs)
    yield fake
    # Leave no armed fault or changed knob behind for code that runs between tests.
    fake.reset()


@pytest.fixture
def codat_conn_env(fake_codat: FakeCodat, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point Airflow's ``codat_default`` connection at the fake Codat API."""
    connection = json.dumps({"conn_type": "codat", "password": fake_codat.api_key, "host": fake_codat.url})
    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", connection)
    return connection
