"""Reliability suite set-up: the end-to-end fixtures, plus figures, task events, an S3 fault proxy and a network guard.

The end-to-end fixtures (``e2e``, ``make_dag``: real DAG runs through ``dag.test()`` against the
fake Codat API and moto's S3 server, both over HTTP on 127.0.0.1) are the ones of ``tests/e2e``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.listeners import hookimpl

from airflow_provider_codat.testing.local_stack import aws_connection

# The end-to-end fixtures, shared rather than copied.
from tests.e2e.conftest import airflow_db, aws_conn_env, dags_folder, e2e, make_dag  # noqa: F401
from tests.reliability.helpers import Figures
from tests.reliability.s3_proxy import S3FaultProxy

#: Where the suite's figures are written when the session ends.
FIGURES_PATH = Path(
    os.environ.get("CODAT_RELIABILITY_FIGURES", Path(tempfile.gettempdir()) / "codat-reliability-figures.json")
)

_figures = Figures()


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """Cases, records checked, lost and duplicated, over the session; written to FIGURES_PATH at its end."""
    yield _figures
    totals = _figures.totals()
    FIGURES_PATH.write_text(json.dumps(totals, indent=1))


@pytest.fixture(autouse=True)
def _figures_for_this_test(request: pytest.FixtureRequest) -> None:
    """Tell the figures which test adds to them, and whether it is a known bug (xfail)."""
    _figures.test = request.node.nodeid
    _figures.expected_failure = request.node.get_closest_marker("xfail") is not None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures (in a run without xdist; with xdist read FIGURES_PATH)."""
    totals = _figures.totals()
    if totals["cases"]:
        terminalreporter.write_sep("-", "Codat reliability figures")
        terminalreporter.write_line(
            f"cases: {totals['cases']}, records checked: {totals['records_checked']}, "
            f"lost: {totals['lost']}, duplicated: {totals['duplicated']} (written to {FIGURES_PATH})"
        )
        for case in totals["known_bug_cases"]:
            terminalreporter.write_line(
                f"known bug (xfail): {case['case']}: checked {case['checked']}, lost {case['lost']}, "
                f"duplicated {case['duplicated']}"
            )


class TaskEvents:
    """
    An Airflow listener that keeps what tasks ended with: the exception object of failed ones and
    the executed operator of every one (registered for a test by the ``task_events`` fixture).
    """

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.finished: list[tuple[str, Any]] = []

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self.finished.append(("success", task_instance))

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self.finished.append(("failed", task_instance))
        if isinstance(error, BaseException):
            self.errors.append(error)

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self.finished.append(("skipped", task_instance))

    def error_text(self) -> str:
        """The last task failure's exception text."""
        assert self.errors, "no task failed"
        return str(self.errors[-1])


@pytest.fixture
def task_events() -> Iterator[TaskEvents]:
    """What the tasks of this test ended with (exceptions included), via an Airflow listener."""
    from airflow.sdk.listener import get_listener_manager

    events = TaskEvents()
    manager = get_listener_manager()
    manager.add_listener(events)
    try:
        yield events
    finally:
        manager.pm.unregister(events)


@pytest.fixture
def s3_proxy(e2e: dict, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3FaultProxy]:  # noqa: F811
    """A fault-injecting proxy in front of moto; ``aws_default`` points at it (botocore: 2 attempts)."""
    proxy = S3FaultProxy(moto_server).start()
    conn = aws_connection(proxy.url, retries={"mode": "standard", "total_max_attempts": 2})
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    try:
        yield proxy
    finally:
        proxy.stop()


class NetworkGuard:
    """Records every outgoing connection; refuses any that is not to a loopback address."""

    def __init__(self) -> None:
        self.connections: list[tuple[str, int]] = []
        self.refused: list[Any] = []


def _is_loopback(host: Any) -> bool:
    if host in ("localhost", None, ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    """
    This suite only ever talks to 127.0.0.1: a connection or name lookup for anything else is
    refused (and recorded), so a bug can never send a request, or an API key, off the machine.
    """
    guard = NetworkGuard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = address[0], address[1]
            guard.connections.append((host, port))
            if not _is_loopback(host):
                guard.refused.append(address)
                raise ConnectionRefusedError(f"reliability suite: refused a connection to {address} (not loopback)")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    # Airflow looks up this machine's own name (its task instances record a hostname).
    own_names = {socket.gethostname()}

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if not _is_loopback(name) and name not in own_names:
            guard.refused.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"reliability suite: refused to resolve {name!r} (not loopback)")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return guard
