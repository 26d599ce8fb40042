"""Run the fake Codat API in a background thread, on a free port of 127.0.0.1.

Usable from tests, the demo and benchmarks alike::

    with FakeCodatServer(FakeCodatConfig(companies=5)) as server:
        requests.get(f"{server.url}/companies", headers=...)
        server.fake.records(server.fake.company_ids()[0], "invoices")
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from airflow_provider_codat.testing.fake_codat.app import create_app
from airflow_provider_codat.testing.fake_codat.config import FakeCodatConfig
from airflow_provider_codat.testing.fake_codat.fake import FakeCodat


class FakeCodatServer:
    """
    A uvicorn server for a :class:`FakeCodat`, in a daemon thread.

    :param config: the fake's knobs, or a ready :class:`FakeCodat` to serve.
    :param host: the interface to bind (only loopback makes sense for a fake).
    :param port: the port; 0 picks a free one.
    :param knobs: knob overrides on top of ``config`` (when it is a config).
    """

    def __init__(
        self,
        config: FakeCodatConfig | FakeCodat | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **knobs: Any,
    ) -> None:
        self.fake = config if isinstance(config, FakeCodat) else FakeCodat(config, **knobs)
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:51234``; only valid once started."""
        if self.fake.url is None:
            raise RuntimeError("The fake Codat server is not running")
        return self.fake.url

    def start(self, timeout: float = 10.0) -> FakeCodatServer:
        """
        Start serving and wait until the server accepts connections.

        :param timeout: seconds to wait for start-up.
        :return: self, for chaining.
        :raises RuntimeError: if it does not start in time.
        """
        if self._thread is not None:
            return self
        # Bind first, so port 0 resolves to a real port before uvicorn starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.fake),
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
            # Benchmarks open many connections at once.
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"fake-codat-{port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("The fake Codat server did not start")
            time.sleep(0.01)
        self.fake.url = f"http://{self._host}:{port}"
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None
        self.fake.url = None

    def __enter__(self) -> FakeCodatServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
