"""The HTTP side of the fake Codat API: a FastAPI app over a :class:`~.fake.FakeCodat`.

Codat's endpoints answer with pre-encoded bytes. Faults, limits, auth and the rate-limit headers
live in :class:`FaultMiddleware`, a plain ASGI middleware, because two faults must act below the
response objects: ``drop_connection`` sends part of the body and then aborts the connection, and
``truncate_body`` rewrites Content-Length. The ``/_fake/`` admin endpoints skip all of that: they
need no API key and are never faulted, so a test can drive a server in another thread or process:

* ``GET /_fake/config`` / ``POST /_fake/config`` (JSON object of knobs; answers the new config,
  or 400 on an unknown knob or bad value);
* ``POST /_fake/reset`` (back to the starting knobs and data, statistics zeroed);
* ``GET /_fake/stats``, ``GET /_fake/log`` (every API request: method, path, query, status);
* ``GET /_fake/companies`` (the ids), ``GET /_fake/records?companyId=&dataType=[&connectionId=]
  [&bankAccountId=]`` (the truth);
* ``POST /_fake/records/modify|delete|add`` (JSON arguments of ``FakeCodat.modify_records`` etc.,
  in camelCase or snake_case; answers the changed ids);
* ``POST /_fake/availability`` (``{"companyId", "dataType", "unsynced"?: bool, "unsupported"?: bool}``);
* ``GET /_fake/health``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_codat.data_types import DATA_TYPES
from airflow_provider_codat.data_types import Scope as DataScope
from airflow_provider_codat.testing.fake_codat.fake import CodatHTTPError, FakeCodat, error_body
from airflow_provider_codat.testing.fake_codat.table import encode

_JSON = "application/json"
_COMPANY_TYPES = {dt.name: dt for dt in DATA_TYPES.values() if dt.scope is DataScope.COMPANY and dt.incremental}
_CONNECTION_TYPES = {dt.name: dt for dt in DATA_TYPES.values() if dt.scope is DataScope.CONNECTION}
_REPORTS = {"balanceSheet", "profitAndLoss", "cashFlowStatement"}


class DeliberateDisconnect(Exception):
    """Raised by ``drop_connection`` after half a body, so the server aborts the connection."""


class _QuietDisconnects(logging.Filter):
    """Keep the server's "Exception in ASGI application" tracebacks out of logs for deliberate drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DeliberateDisconnect))


logging.getLogger("uvicorn.error").addFilter(_QuietDisconnects())


class FaultMiddleware:
    """
    Applies latency, faults, limits, auth and rate-limit headers to Codat API requests.

    :param app: the FastAPI app.
    :param fake: the state that decides.
    """

    def __init__(self, app: ASGIApp, fake: FakeCodat) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_fake/"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        query = scope["query_string"].decode("latin-1")
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        admission = self.fake.admit(method, path, query, authorization)
        status = 500
        try:
            if admission.latency_s:
                await asyncio.sleep(admission.latency_s)
            if admission.reject is not None:
                status = admission.reject.status
                await _send_error(send, admission.reject, admission.headers)
                return
            if admission.slow_s:
                await asyncio.sleep(admission.slow_s)
            response: dict[str, Any] = {"body": []}

            async def capture(message: Message) -> None:
                if message["type"] == "http.response.start":
                    response["start"] = message
                elif message["type"] == "http.response.body":
                    response["body"].append(message.get("body", b""))

            await self.app(scope, receive, capture)
            start, body = response["start"], b"".join(response["body"])
            status = start["status"]
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            headers += [(k.lower().encode(), v.encode()) for k, v in admission.headers.items()]
            if admission.truncate_body:
                body = body[: len(body) // 2]
            headers.append((b"content-length", str(len(body)).encode()))
            if admission.drop_connection:
                # Announce the whole body, send half, then abort: the client sees a broken read.
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                raise DeliberateDisconnect(path)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            self.fake.finish(admission, method, path, query, status)


async def _send_error(send: Send, error: CodatHTTPError, headers: dict[str, str]) -> None:
    body = error.body()
    raw_headers = [(b"content-type", _JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type=_JSON)


def create_app(fake: FakeCodat | None = None) -> FastAPI:
    """
    Build the fake Codat API.

    :param fake: the state to serve; a default :class:`FakeCodat` if None.
    :return: the ASGI app; ``app.state.fake`` is the state.
    """
    fake = fake or FakeCodat()
    app = FastAPI(title="Fake Codat API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fake = fake
    app.add_middleware(FaultMiddleware, fake=fake)

    @app.exception_handler(CodatHTTPError)
    async def codat_error(request: Request, error: CodatHTTPError) -> Response:
        return Response(error.body(), status_code=error.status, media_type=_JSON, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = "Not found" if error.status_code == 404 else str(error.detail)
        return Response(encode(error_body(error.status_code, message)), status_code=error.status_code, media_type=_JSON)

    def params(request: Request) -> dict[str, str]:
        return dict(request.query_params)

    # ----- Codat endpoints -----

    @app.get("/companies")
    async def list_companies(request: Request) -> Response:
        return _json(fake.list_page(request.url.path, params(request), None, "companies"))

    @app.get("/companies/{company_id}")
    async def get_company(company_id: str) -> Response:
        return _json(fake.company_body(company_id))

    @app.get("/companies/{company_id}/connections")
    async def list_connections(company_id: str, request: Request) -> Response:
        return _json(fake.list_page(request.url.path, params(request), company_id, "connections"))

    @app.get("/companies/{company_id}/connections/{connection_id}")
    async def get_connection(company_id: str, connection_id: str) -> Response:
        return _json(fake.connection_body(company_id, connection_id))

    @app.get("/companies/{company_id}/dataStatus")
    async def data_status(company_id: str) -> Response:
        return _json(fake.data_status_body(company_id))

    @app.post("/companies/{company_id}/data/queue/{data_type}")
    async def queue(company_id: str, data_type: str) -> Response:
        return _json(encode(fake.queue(company_id, [data_type])[0]))

    @app.post("/companies/{company_id}/data/all")
    async def queue_all(company_id: str) -> Response:
        fake.queue(company_id, None)
        return Response(status_code=204)

    @app.get("/companies/{company_id}/data/history/{dataset_id}")
    async def pull_operation(company_id: str, dataset_id: str) -> Response:
        return _json(encode(fake.operation(company_id, dataset_id)))

    @app.get("/companies/{company_id}/data/info")
    async def company_info(company_id: str, request: Request) -> Response:
        return _json(fake.snapshot_body(company_id, DATA_TYPES["info"], params(request)))

    @app.get("/companies/{company_id}/data/financials/{report}")
    async def financial_report(company_id: str, report: str, request: Request) -> Response:
        if report not in _REPORTS:
            raise CodatHTTPError(404, "Not found")
        return _json(fake.snapshot_body(company_id, DATA_TYPES[report], params(request)))

    @app.get("/companies/{company_id}/data/{segment}")
    async def company_records(company_id: str, segment: str, request: Request) -> Response:
        if segment not in _COMPANY_TYPES:
            raise CodatHTTPError(404, "Not found")
        return _json(fake.list_page(request.url.path, params(request), company_id, (segment, None, None)))

    @app.get("/companies/{company_id}/connections/{connection_id}/data/bankAccounts/{account_id}/bankTransactions")
    async def bank_transactions(company_id: str, connection_id: str, account_id: str, request: Request) -> Response:
        target = ("bankTransactions", connection_id, account_id)
        return _json(fake.list_page(request.url.path, params(request), company_id, target))

    @app.get("/companies/{company_id}/connections/{connection_id}/data/{segment}")
    async def connection_records(company_id: str, connection_id: str, segment: str, request: Request) -> Response:
        if segment not in _CONNECTION_TYPES:
            raise CodatHTTPError(404, "Not found")
        return _json(fake.list_page(request.url.path, params(request), company_id, (segment, connection_id, None)))

    # ----- admin endpoints (no API key, never faulted) -----

    @app.get("/_fake/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_fake/config")
    async def get_config() -> dict[str, Any]:
        return fake.config.to_dict()

    @app.post("/_fake/config")
    async def set_config(request: Request) -> Response:
        try:
            fake.configure(**(await request.json()))
        except (TypeError, ValueError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse(fake.config.to_dict())

    @app.post("/_fake/reset")
    async def reset() -> Response:
        fake.reset()
        return Response(status_code=204)

    @app.get("/_fake/stats")
    async def stats() -> dict[str, Any]:
        return fake.stats()

    @app.get("/_fake/log")
    async def request_log() -> list[dict[str, Any]]:
        return fake.request_log()

    @app.get("/_fake/companies")
    async def company_ids() -> list[str]:
        return fake.company_ids()

    @app.get("/_fake/records")
    async def records(
        companyId: str, dataType: str, connectionId: str | None = None, bankAccountId: str | None = None
    ) -> Response:
        return _admin_call(lambda: fake.records(companyId, dataType, connectionId, bankAccountId))

    @app.post("/_fake/records/{action}")
    async def change_records(action: str, request: Request) -> Response:
        """``action`` is ``modify``, ``delete`` or ``add``; the JSON body holds the method's arguments."""
        methods = {"modify": fake.modify_records, "delete": fake.delete_records, "add": fake.add_records}
        if action not in methods:
            return JSONResponse({"error": f"unknown action {action!r}"}, status_code=404)
        arguments = _snake_case(await request.json())
        return _admin_call(lambda: methods[action](**arguments))

    @app.post("/_fake/availability")
    async def availability(request: Request) -> Response:
        """JSON ``{"companyId", "dataType", "unsynced"?: bool, "unsupported"?: bool}``."""
        body = await request.json()

        def apply() -> str:
            if "unsynced" in body:
                fake.set_unsynced(body["companyId"], body["dataType"], body["unsynced"])
            if "unsupported" in body:
                fake.set_unsupported(body["companyId"], body["dataType"], body["unsupported"])
            return fake.availability(body["companyId"], body["dataType"])

        return _admin_call(apply)

    return app


def _admin_call(call: Any) -> Response:
    try:
        return Response(json.dumps(call()), media_type=_JSON)
    except CodatHTTPError as error:
        return JSONResponse({"error": error.message}, status_code=error.status)
    except (KeyError, TypeError, ValueError) as error:
        return JSONResponse({"error": str(error)}, status_code=400)


def _snake_case(arguments: dict[str, Any]) -> dict[str, Any]:
    """Accept the JSON-ish ``companyId`` as well as the Python ``company_id``."""
    out = {}
    for key, value in arguments.items():
        out["".join(f"_{c.lower()}" if c.isupper() else c for c in key)] = value
    return out
