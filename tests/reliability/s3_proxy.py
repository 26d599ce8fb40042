"""A fault-injecting HTTP proxy in front of the moto S3 server, for S3 failures in real DAG runs.

moto answers every request correctly; real S3 sometimes does not. :class:`S3FaultProxy` listens on
127.0.0.1, forwards each request unchanged to moto, and answers chosen requests itself with an S3
error instead: "the first ``UploadPart`` gets a 500", "every ``UploadPart`` gets a 500", "every
request gets 403 AccessDenied". It records every request it saw (operation, key, status), so a
test can tell what the writer really sent (retries, aborts).

Point the Airflow AWS connection's ``endpoint_url`` at :attr:`S3FaultProxy.url`; signatures stay
valid because the ``Host`` header is forwarded as the client sent it and moto does not check
them.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Headers that describe one hop, not the message: never forwarded as they are.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
}


def operation(method: str, path: str, query: str) -> str:
    """The S3 API operation of a path-style request (only the ones the writer and operator use)."""
    params = parse_qs(query, keep_blank_values=True)
    parts = [p for p in path.split("/") if p]
    has_key = len(parts) > 1
    if method == "PUT" and "partNumber" in params and "uploadId" in params:
        return "UploadPart"
    if method == "POST" and "uploads" in params:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in params:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in params:
        return "AbortMultipartUpload"
    if method == "POST" and "delete" in params:
        return "DeleteObjects"
    if method == "PUT" and has_key:
        return "PutObject"
    if method == "HEAD" and not has_key:
        return "HeadBucket"
    if method == "GET" and not has_key and "uploads" in params:
        return "ListMultipartUploads"
    if method == "GET" and not has_key:
        return "ListObjects"
    if method == "GET":
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    return f"{method} {'object' if has_key else 'bucket'}"


@dataclass
class Fault:
    """
    Answer matching requests with an S3 error instead of forwarding them.

    :param operation: the S3 operation to fail (``UploadPart``), or ``"*"`` for every request.
    :param status: the HTTP status to answer.
    :param code: the S3 error code in the XML body (``InternalError``, ``AccessDenied``).
    :param times: how many matching requests to fail; ``None`` for all of them.
    :param skip: let this many matching requests through first (fail the N+1th).
    """

    operation: str
    status: int = 500
    code: str = "InternalError"
    times: int | None = 1
    skip: int = 0
    injected: int = 0
    _seen: int = 0

    def take(self, op: str) -> bool:
        if self.operation not in ("*", op):
            return False
        self._seen += 1
        if self._seen <= self.skip:
            return False
        if self.times is not None and self.injected >= self.times:
            return False
        self.injected += 1
        return True


@dataclass
class Seen:
    """One request the proxy handled."""

    operation: str
    method: str
    path: str
    status: int
    injected: bool


@dataclass
class S3FaultProxy:
    """
    A threaded HTTP proxy on 127.0.0.1 that forwards to ``upstream`` and injects :class:`Fault` s.

    :param upstream: moto's endpoint, e.g. ``http://127.0.0.1:51234``.
    """

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, fault: Fault) -> Fault:
        """Arm a fault; returns it, so a test can read ``injected`` afterwards."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def operations(self, name: str) -> list[Seen]:
        """The requests of one S3 operation, in order."""
        with self._lock:
            return [s for s in self.log if s.operation == name]

    def _decide(self, op: str) -> Fault | None:
        with self._lock:
            return next((f for f in self.faults if f.take(op)), None)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.log.append(seen)

    def start(self) -> S3FaultProxy:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and Expect: 100-continue handled for us

            def log_message(self, *args: object) -> None:  # no per-request noise in test output
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                parts = urlsplit(self.path)
                op = operation(self.command, parts.path, parts.query)
                fault = proxy._decide(op)
                if fault is not None:
                    self._send_error(fault)
                    proxy._record(Seen(op, self.command, parts.path, fault.status, True))
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    status = response.status
                    answer = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                finally:
                    upstream.close()
                self.send_response(status)
                for key, value in answer:
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                proxy._record(Seen(op, self.command, parts.path, status, False))

            def _send_error(self, fault: Fault) -> None:
                xml = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{fault.code}</Code><Message>Injected by the test proxy: {fault.code}</Message>"
                    "<RequestId>reliability-proxy</RequestId></Error>"
                ).encode()
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(xml)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None
