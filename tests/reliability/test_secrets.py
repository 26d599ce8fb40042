"""Secrets: the API key and its base64 form never appear anywhere a run leaves text behind; TLS is verified.

Real DAG runs (a success through every kind of Codat fault, a skip, an auth failure, a quota
failure) against the fake Codat API, which only accepts a distinctive key. Everything the runs
leave is then scanned for the key, its base64 form (the ``Authorization`` header value) and the
whole header: task logs (captured stdout/stderr, log records, log files), exception texts (the
exceptions themselves, their tracebacks and attributes), XComs, rendered templates, the
OpenLineage events the runs produce, every S3 object (decompressed), and the metadata DB file.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import gzip
import ipaddress
import json
import ssl
import sys
import threading
import traceback
import types
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from airflow.listeners import hookimpl

from airflow_provider_codat.exceptions import CodatConnectionError
from tests.e2e.conftest import read_objects, task_states
from tests.reliability.helpers import END, FAST, START, folder, in_window, wait_past_midnight_utc

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("reliability")]

#: A key shaped like a real one, accepted by the fake for these tests only.
SECRET = "cdt_live_5f0c9e2a7b4d41e8a3c6f19d2e7b8a40"
SECRET_B64 = base64.b64encode(SECRET.encode()).decode()
NEEDLES = (SECRET, SECRET_B64, f"Basic {SECRET_B64}", base64.b64encode(f"{SECRET}:".encode()).decode())


def _jsonable(value: Any) -> Any:
    """Lineage objects (attrs classes, dataclasses) as plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if hasattr(value, "__attrs_attrs__"):
        import attrs

        return _jsonable(attrs.asdict(value, recurse=False))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


class LineageCollector:
    """
    Builds the OpenLineage event of every finished task, as the OpenLineage provider's listener
    does: the operator's ``get_openlineage_facets_on_complete`` (inputs, outputs, facets) plus the
    job and run facets describing the task (its rendered template fields and arguments).
    """

    def __init__(self) -> None:
        self.events: list[dict] = []

    def _emit(self, event_type: str, task_instance: Any) -> None:
        task = task_instance.task
        lineage = task.get_openlineage_facets_on_complete(task_instance)
        self.events.append(
            _jsonable(
                {
                    "eventType": event_type,
                    "eventTime": dt.datetime.now(dt.UTC).isoformat(),
                    "job": {"namespace": "airflow", "name": f"{task_instance.dag_id}.{task_instance.task_id}"},
                    "run": {
                        "runId": str(task_instance.id),
                        "facets": {
                            "airflow": {
                                "task": {name: getattr(task, name, None) for name in task.template_fields},
                                "hook_params": getattr(task, "hook_params", None),
                                "operator": type(task).__name__,
                            },
                            **dict(getattr(lineage, "run_facets", {}) or {}),
                        },
                    },
                    "inputs": list(lineage.inputs),
                    "outputs": list(lineage.outputs),
                }
            )
        )

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self._emit("COMPLETE", task_instance)

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self._emit("COMPLETE", task_instance)  # skipped tasks end their lineage run as COMPLETE

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self._emit("FAIL", task_instance)


@pytest.fixture
def lineage(monkeypatch: pytest.MonkeyPatch):
    """OpenLineage events of this test's task runs (the provider's own classes when it is installed)."""
    from airflow.sdk.listener import get_listener_manager

    try:
        import airflow.providers.openlineage.extractors  # noqa: F401
    except ImportError:
        # Without the OpenLineage provider its classes are no-ops: stand in for the two the
        # operator builds its lineage from, so the test sees what the provider would emit.
        import airflow.providers.common.compat.openlineage.facet as facet

        @dataclasses.dataclass
        class Dataset:
            namespace: str
            name: str
            facets: dict = dataclasses.field(default_factory=dict)

        @dataclasses.dataclass
        class OperatorLineage:
            inputs: list = dataclasses.field(default_factory=list)
            outputs: list = dataclasses.field(default_factory=list)
            run_facets: dict = dataclasses.field(default_factory=dict)
            job_facets: dict = dataclasses.field(default_factory=dict)

        extractors = types.ModuleType("airflow.providers.openlineage.extractors")
        extractors.OperatorLineage = OperatorLineage
        monkeypatch.setattr(facet, "Dataset", Dataset)
        monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", extractors)
    collector = LineageCollector()
    manager = get_listener_manager()
    manager.add_listener(collector)
    try:
        yield collector
    finally:
        manager.pm.unregister(collector)


def _db_texts(dag_ids: list[str]) -> list[str]:
    """XComs and rendered template fields of the runs, as stored in the metadata DB."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    texts = []
    with create_session() as session:
        xcoms = session.query(XComModel).filter(XComModel.dag_id.in_(dag_ids)).all()
        rendered = (
            session.query(RenderedTaskInstanceFields).filter(RenderedTaskInstanceFields.dag_id.in_(dag_ids)).all()
        )
        texts += [f"xcom {x.dag_id}.{x.task_id}.{x.key}: {x.value}" for x in xcoms]
        texts += [f"rendered {r.dag_id}.{r.task_id}: {json.dumps(r.rendered_fields)}" for r in rendered]
    assert len(xcoms) >= 3 and len(rendered) >= 4, (len(xcoms), len(rendered))  # there was something to scan
    return texts


def _exception_texts(errors: list[BaseException]) -> list[str]:
    texts = []
    for error in errors:
        texts.append(str(error))
        texts.append(repr(error))
        texts.append("".join(traceback.format_exception(error)))
        texts.append(repr(vars(error)))
        texts.append(repr(error.args))
    return texts


def _s3_texts(s3, bucket: str) -> list[str]:
    texts = []
    for key, blob in read_objects(s3, bucket).items():
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
        texts.append(f"{key}\n{blob.decode()}")
    return texts


def _metadata_db_bytes() -> bytes:
    """The SQLite metadata DB file (and its journal), raw: the key must not be stored anywhere in it."""
    from airflow.configuration import conf

    url = conf.get("database", "sql_alchemy_conn")
    assert url.startswith("sqlite:///"), url
    path = Path(url.removeprefix("sqlite:///").split("?")[0])
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _log_files() -> list[str]:
    import os

    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    return [p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()] if logs.exists() else []


@pytest.mark.fake_codat(companies=3, records={"invoices": 400}, api_key=SECRET)
def test_api_key_never_leaks_from_real_runs(e2e, make_dag, task_events, lineage, capfd, caplog, figures):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company, other = fake.company_ids()[:2]
    common = {
        "s3_bucket": bucket,
        "s3_prefix": "codat/{{ dag.dag_id }}",  # templated fields, so there are rendered templates to scan
        "window_start": "{{ '" + START.isoformat() + "' }}",
        "window_end": END.isoformat(),
        "hook_params": {**FAST, "page_size": 20, "concurrency": 3},
    }
    capfd.readouterr()

    # 1. Success through every kind of Codat fault (errors and retries are logged).
    fake.configure(fail_429=2, retry_after_s=1, fail_5xx=2, drop_connection=2, truncate_body=2)
    ok = make_dag("rel_secret_ok", company_id=company, data_type="invoices", **common).test()
    assert task_states(ok) == {"extract": "success"}
    fake.configure(fail_429=0, fail_5xx=0, drop_connection=0, truncate_body=0)
    expected = in_window(fake.records(company, "invoices"))
    window_folder = folder(company).replace("codat/", "codat/rel_secret_ok/", 1)
    figures.check_window("secrets run through every Codat fault", s3, bucket, window_folder, expected)

    # 2. A data type Codat has not synced: skipped, with Codat's message in the manifest.
    fake.set_unsynced(other, "bills")
    skipped = make_dag("rel_secret_skip", company_id=other, data_type="bills", **common).test()
    assert task_states(skipped) == {"extract": "skipped"}

    # 3. The key is refused (Codat expects another one): the failure must not quote the key sent.
    fake.configure(api_key="a-different-key")
    refused = make_dag("rel_secret_401", company_id=company, data_type="customers", **common).test()
    assert task_states(refused) == {"extract": "failed"}
    assert "Codat refused the API key (401)" in task_events.error_text()
    fake.configure(api_key=SECRET)

    # 4. The daily quota is spent: fails at once, with the reset time.
    wait_past_midnight_utc()
    fake.configure(daily_quota_exhausted=True)
    quota = make_dag("rel_secret_quota", company_id=company, data_type="payments", **common).test()
    assert task_states(quota) == {"extract": "failed"}
    assert "daily quota" in task_events.error_text()
    fake.configure(daily_quota_exhausted=False)

    out, err = capfd.readouterr()
    haystacks: dict[str, list[str]] = {
        "task logs (stdout/stderr)": [out, err],
        "task logs (log records)": [caplog.text],
        "task log files": _log_files(),
        "exception texts": _exception_texts(task_events.errors),
        "XComs and rendered templates": _db_texts(
            ["rel_secret_ok", "rel_secret_skip", "rel_secret_401", "rel_secret_quota"]
        ),
        "OpenLineage events": [json.dumps(event) for event in lineage.events],
        "S3 objects": _s3_texts(s3, bucket),
    }
    # The scan is only worth something if the texts are the real ones.
    assert "Retrying" in out + err and "Codat refused the API key" in out + err
    assert len(task_events.errors) == 2
    assert {e["eventType"] for e in lineage.events} == {"COMPLETE", "FAIL"} and len(lineage.events) == 4
    assert any(fake.url in json.dumps(e["inputs"]) for e in lineage.events)
    assert sum(len(t) for t in haystacks["S3 objects"]) > 100_000
    for where, texts in haystacks.items():
        for text in texts:
            for needle in NEEDLES:
                assert needle not in text, f"the API key leaked into {where}: {needle[:6]}... found"
    db = _metadata_db_bytes()
    assert len(db) > 100_000
    for needle in NEEDLES:
        assert needle.encode() not in db, "the API key is stored in the metadata DB"


@pytest.mark.fake_codat(companies=2, records={"invoices": 20}, api_key=SECRET)
def test_the_key_and_its_base64_form_are_registered_for_masking(e2e, make_dag):
    """Airflow's task log masker hides both forms, should any library ever log the header."""
    from airflow.sdk._shared.secrets_masker import redact

    dag = make_dag("rel_secret_mask", company_id=e2e["fake"].company_ids()[0], data_type="invoices",
                   s3_bucket=e2e["bucket"], full_refresh=True)  # fmt: skip
    assert task_states(dag.test()) == {"extract": "success"}
    line = f"GET /companies key={SECRET} headers={{'Authorization': 'Basic {SECRET_B64}'}}"
    masked = redact(line)
    assert SECRET not in masked and SECRET_B64 not in masked, masked


def test_settings_and_auth_reprs_hide_the_key(monkeypatch):
    from airflow_provider_codat.hooks.codat import CodatHook

    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", json.dumps({"conn_type": "codat", "password": SECRET}))
    hook = CodatHook()
    texts = [repr(hook.settings), str(hook.settings), repr(hook.session.auth), repr(hook), repr(hook.session.headers)]
    for text in texts:
        for needle in NEEDLES:
            assert needle not in text, text


# -- TLS verification --------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by nobody a client trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate; records the requests it got."""
    cert, key = _self_signed(tmp_path)
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            body = json.dumps({"id": "x"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"https://127.0.0.1:{server.server_address[1]}", "ca": str(cert), "received": received}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_tls_is_verified_by_default_and_the_key_never_reaches_an_unverified_server(tls_server, monkeypatch):
    from airflow_provider_codat.hooks.codat import CodatHook, CodatSettings

    assert CodatSettings(api_key="k").verify is True
    company = "8a210b68-6988-11ed-a1eb-0242ac120002"
    conn = {"conn_type": "codat", "password": SECRET, "host": tls_server["url"]}
    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", json.dumps(conn))
    hook = CodatHook(retry_min_wait=0)
    assert hook.settings.verify is True and hook.session.verify is True
    with pytest.raises(CodatConnectionError) as caught:
        hook.get_company(company)
    message = str(caught.value)
    assert message.startswith(f"TLS verification failed for {tls_server['url']}"), message
    assert "CA bundle" in message, message  # says what to fix
    assert hook.stats["requests"] == 1 and hook.stats["retries"] == 0  # a bad certificate is not retried
    assert tls_server["received"] == []  # the handshake failed: no request, no Authorization header, went out
    for needle in NEEDLES:
        assert needle not in message and needle not in repr(caught.value)


@pytest.fixture
def trusting_conn(tls_server, monkeypatch):
    """A Codat connection whose 'verify' extra is the test server's certificate (a CA bundle)."""
    conn = {"conn_type": "codat", "password": SECRET, "host": tls_server["url"], "extra": {"verify": tls_server["ca"]}}
    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", json.dumps(conn))
    return tls_server


def test_a_ca_bundle_in_the_verify_extra_is_trusted(trusting_conn, monkeypatch):
    """Control for the test above: the same server is reachable once its certificate is trusted."""
    from airflow_provider_codat.hooks.codat import CodatHook

    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    company = "8a210b68-6988-11ed-a1eb-0242ac120002"
    assert CodatHook().get_company(company) == {"id": "x"}
    assert trusting_conn["received"] == [{"path": f"/companies/{company}", "authorization": f"Basic {SECRET_B64}"}]


def test_the_verify_extra_wins_over_requests_ca_bundle(trusting_conn, monkeypatch):
    from airflow_provider_codat.hooks.codat import CodatHook

    # Many images set these (this machine does); the connection's own setting must still apply.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    company = "8a210b68-6988-11ed-a1eb-0242ac120002"
    assert CodatHook(max_retries=0).get_company(company) == {"id": "x"}
