"""Command line: serve the fake Codat API until interrupted.

::

    python -m airflow_provider_codat.testing.fake_codat --port 8080 [--companies 250] [--records 20]
        [--latency-ms 0] [--api-key KEY] [--seed 1] [--records-for invoices=500]
        [--company-records 0:invoices=100000] [--config '{"page_size_cap": 2000}'] [--warm]

When it is ready it prints exactly one line, ``Fake Codat API listening on http://127.0.0.1:PORT``,
so a parent process can wait for it. Knobs can be changed later with ``POST /_fake/config``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from airflow_provider_codat.testing.fake_codat.config import DEFAULT_API_KEY, FakeCodatConfig


def _count(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    return name, int(count)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_codat.testing.fake_codat", description="Serve a fake Codat API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--companies", type=int, help="number of companies (default 250)")
    parser.add_argument("--records", type=int, help="records per record set (default 20)")
    parser.add_argument("--latency-ms", type=float, help="delay added to every request")
    parser.add_argument("--api-key", help=f"accepted API key (default {DEFAULT_API_KEY!r})")
    parser.add_argument("--seed", type=int, help="data seed (default 1)")
    parser.add_argument("--page-size-cap", type=int, help="silently clamp pageSize to this")
    parser.add_argument("--concurrency-limit", type=int, help="in-flight requests per company (default 10)")
    parser.add_argument("--sync-delay-s", type=float, help="seconds a queued refresh takes")
    parser.add_argument(
        "--records-for",
        type=_count,
        action="append",
        default=[],
        metavar="TYPE=N",
        help="records of one data type for every company (repeatable)",
    )
    parser.add_argument(
        "--company-records",
        action="append",
        default=[],
        metavar="COMPANY:TYPE=N",
        help="records of one data type for one company, by id or index (repeatable)",
    )
    parser.add_argument("--config", help="more knobs: a JSON object, or @file.json")
    parser.add_argument("--warm", action="store_true", help="generate the --company-records sets before serving")
    return parser


def config_from_args(args: argparse.Namespace) -> FakeCodatConfig:
    """
    The knobs a command line asks for.

    :param args: parsed arguments of :func:`main`.
    """
    knobs: dict[str, Any] = {}
    if args.config:
        text = Path(args.config[1:]).read_text() if args.config.startswith("@") else args.config
        knobs.update(json.loads(text))
    flags = {
        "companies": args.companies,
        "records_per_type": args.records,
        "latency_ms": args.latency_ms,
        "api_key": args.api_key,
        "seed": args.seed,
        "page_size_cap": args.page_size_cap,
        "concurrency_limit": args.concurrency_limit,
        "sync_delay_s": args.sync_delay_s,
    }
    knobs.update({name: value for name, value in flags.items() if value is not None})
    if args.records_for:
        knobs["records"] = {**knobs.get("records", {}), **dict(args.records_for)}
    for entry in args.company_records:
        company, _, counts = entry.partition(":")
        name, count = _count(counts)
        knobs.setdefault("company_records", {}).setdefault(company, {})[name] = count
    return FakeCodatConfig().replace(**knobs)


def main(argv: list[str] | None = None) -> int:
    """
    Serve until SIGINT or SIGTERM.

    :param argv: arguments (default ``sys.argv[1:]``).
    :return: the exit status.
    """
    args = _parser().parse_args(argv)
    from airflow_provider_codat.testing.fake_codat.server import FakeCodatServer

    server = FakeCodatServer(config_from_args(args), host=args.host, port=args.port)
    if args.warm:
        for company, counts in server.fake.config.company_records.items():
            company_id = server.fake.company_ids()[int(company)] if company.isdigit() else company
            server.fake.warm([company_id], list(counts))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"Fake Codat API listening on {server.url}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
