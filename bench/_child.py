"""One measurement in a fresh process; prints one line, ``RESULT {json}``.

Started by ``bench/run.py`` with the local stack's Airflow connection variables in its environment
(``AIRFLOW_CONN_CODAT_DEFAULT``, ``AIRFLOW_CONN_AWS_DEFAULT``). A new process per measurement, so
``ru_maxrss`` (peak resident memory) belongs to that one extraction.

Modes:

* ``extract``: ``CodatToS3Operator.execute()`` once, end to end (hook -> writer -> S3), with a
  minimal task context. ``--profile FILE`` also writes a cProfile of every thread, each timed by
  its own CPU clock, to FILE.
* ``cpu``: the CPU the records themselves need, without HTTP or S3: read the dataset's page bodies
  once, then time each step of the pipeline on them in this process, on this thread's CPU clock.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import resource
import sys
import threading
import time
from importlib.metadata import version
from typing import Any

# The bench measures the extraction, not the task log: keep Airflow's logging quiet.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class _TaskInstance:
    """The part of a task instance that the operator touches."""

    try_number = 1
    map_index = -1

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class _ThreadProfiles:
    """cProfile in every thread (the page readers too), each timed by its own CPU clock."""

    def __init__(self) -> None:
        self.profiles: list[Any] = []
        self._lock = threading.Lock()

    def _start_here(self, *_args: Any) -> None:
        import cProfile

        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()  # replaces this hook in the thread

    def start(self) -> None:
        threading.setprofile(self._start_here)
        self._start_here()

    def stop(self, path: str) -> None:
        import pstats

        threading.setprofile(None)
        for profile in self.profiles:
            profile.disable()
        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def _apply_patches(patches: list[str]) -> None:
    """Experiments: ``module.attr=JSON`` sets a module attribute before the run."""
    for patch in patches:
        target, _, value = patch.partition("=")
        module, _, attr = target.rpartition(".")
        setattr(importlib.import_module(module), attr, json.loads(value))


def _writer_options(options: dict[str, Any]) -> None:
    """Experiments: S3DatasetWriter keyword arguments the operator does not pass (yet)."""
    if not options:
        return
    import functools

    from airflow_provider_codat import s3_writer
    from airflow_provider_codat.transfers import codat_to_s3

    writer = functools.partial(s3_writer.S3DatasetWriter, **options)
    codat_to_s3.S3DatasetWriter = lambda *args, **kwargs: writer(*args, **kwargs)


def extract(args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_codat.transfers.codat_to_s3 import CodatToS3Operator

    _apply_patches(args.patch)
    if args.no_gc_pause:
        from airflow_provider_codat.hooks import codat

        codat._decode_records = codat._JSON.decode  # records decoded with the collector running, as before
    _writer_options(json.loads(args.writer_options) if args.writer_options else {})
    operator = CodatToS3Operator(
        task_id="bench",
        company_id=args.company,
        data_type=args.data_type,
        s3_bucket=args.bucket,
        s3_prefix=f"bench/{args.label}",
        full_refresh=True,
        hook_params=json.loads(args.hook_params) if args.hook_params else {},
    )
    ti = _TaskInstance()
    context = {"ti": ti, "run_id": f"bench_{args.label}", "dag_run": None}
    # What a task resolves once, whatever the dataset's size: the connections and the boto3 client.
    operator.hook.settings  # noqa: B018
    operator.s3_client  # noqa: B018
    gc.collect()
    rss_before = _rss_kib()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    profiles = _ThreadProfiles() if args.profile else None
    if profiles:
        profiles.start()
    started = time.perf_counter()
    summary = operator.execute(context)
    wall = time.perf_counter() - started
    if profiles:
        profiles.stop(args.profile)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    prefix = f"s3://{args.bucket}/"
    stored = sum(
        operator.s3_client.head_object(Bucket=args.bucket, Key=uri.removeprefix(prefix))["ContentLength"]
        for uri in summary["files"]
    )
    return {
        "stored_bytes": stored,
        "wall_s": wall,
        "records": summary["records"],
        "requests": summary["requests"],
        "retries": summary["retries"],
        "files": len(summary["files"]),
        "status": summary["status"],
        "cpu_s": (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime),
        "rss_before_kib": rss_before,
        "peak_rss_kib": usage.ru_maxrss,
        "page_size": operator.hook.settings.page_size,
        "concurrency": operator.hook.settings.concurrency,
        "threads_at_end": threading.active_count(),
    }


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """A small extraction's fixed costs, each step timed: what every task pays whatever its size."""
    from airflow_provider_codat.transfers.codat_to_s3 import CodatToS3Operator

    steps: dict[str, list[float]] = {"codat_settings": [], "s3_client": [], "execute_rest": []}
    records = []
    for attempt in range(args.repeat):
        operator = CodatToS3Operator(
            task_id="bench",
            company_id=args.company,
            data_type=args.data_type,
            s3_bucket=args.bucket,
            s3_prefix=f"bench/{args.label}-{attempt}",
            window_start=args.window_start,
            window_end=args.window_end,
        )
        started = time.perf_counter()
        operator.hook.settings  # noqa: B018 - the Airflow connection, validated
        resolved = time.perf_counter()
        operator.s3_client  # noqa: B018 - S3Hook(...).get_conn(): a boto3 client
        client = time.perf_counter()
        summary = operator.execute({"ti": _TaskInstance(), "run_id": f"bench_{args.label}_{attempt}", "dag_run": None})
        done = time.perf_counter()
        steps["codat_settings"].append(resolved - started)
        steps["s3_client"].append(client - resolved)
        steps["execute_rest"].append(done - client)
        records.append(summary["records"])
    return {"steps": steps, "records": records, "requests": summary["requests"]}


def cpu(args: argparse.Namespace) -> dict[str, Any]:
    """Each step of the pipeline on the dataset's real page bodies, on this thread's CPU clock."""
    import zlib

    import msgspec

    from airflow_provider_codat.hooks import codat
    from airflow_provider_codat.hooks.codat import CodatHook
    from airflow_provider_codat.s3_writer import _CHUNK_RECORDS, DEFAULT_GZIP_LEVEL, _gzip_compressor

    hook = CodatHook(page_size=args.page_size)
    url = f"{hook.settings.base_url}/companies/{args.company}/data/{args.data_type}"
    bodies = []
    for number in range(1, 100_000):
        response = hook.session.get(
            url, params={"page": number, "pageSize": args.page_size, "orderBy": "id"}, timeout=120
        )
        response.raise_for_status()
        bodies.append(response.content)
        if number * args.page_size >= args.records:
            break
    results: dict[str, Any] = {"pages": len(bodies), "body_bytes": sum(map(len, bodies))}

    def clock(step: Any, repeat: int = 3) -> tuple[float, Any]:
        best, out = float("inf"), None
        for _ in range(repeat):
            gc.collect()
            start = time.thread_time()
            out = step()
            best = min(best, time.thread_time() - start)
        return best, out

    seconds: dict[str, float] = {}
    # The envelope check a page reader does in its thread, then the records' decode (GC paused).
    seconds["envelope"], envelopes = clock(lambda: [codat._decode_envelope(body) for body in bodies])
    raws = [envelope.results for envelope in envelopes]

    def parse() -> int:
        count = 0
        for raw in raws:  # one page alive at a time, as in the pipeline
            count += len(codat._decode_records(raw))
        return count

    seconds["parse"], records = clock(parse)
    results["records"] = records
    encoder = msgspec.json.Encoder()
    # Serialise and compress a sample of pages, as the writer does: 1,000-record chunks.
    sample = [codat._decode_records(raw) for raw in raws[: max(1, 20_000 // args.page_size)]]
    chunks = [page[i : i + _CHUNK_RECORDS] for page in sample for i in range(0, len(page), _CHUNK_RECORDS)]
    sample_records = sum(map(len, chunks))
    serialise, lines = clock(lambda: [encoder.encode_lines(chunk) for chunk in chunks])
    seconds["serialise"] = serialise / sample_records * records
    raw_bytes = sum(map(len, lines))
    results["json_bytes_per_record"] = raw_bytes / sample_records
    codecs: dict[str, Any] = {}

    def compress_with(make: Any) -> tuple[float, int]:
        def run() -> int:
            compressor = make()
            return sum(len(compressor.compress(line)) for line in lines) + len(compressor.flush())

        spent, size = clock(run)
        return spent / sample_records * records, size

    for level in args.zlib_levels:
        spent, size = compress_with(lambda level=level: zlib.compressobj(level, zlib.DEFLATED, 31))
        codecs[f"zlib {level}"] = {"seconds": spent, "ratio": raw_bytes / size}
    try:
        from isal import isal_zlib
    except ImportError:
        isal_zlib = None
        results["isal"] = None
    if isal_zlib is not None:
        results["isal"] = version("isal")
        for level in (1, 2, 3):
            spent, size = compress_with(lambda level=level: _gzip_compressor(level))
            codecs[f"isal {level}"] = {"seconds": spent, "ratio": raw_bytes / size}
    default = f"{'isal' if isal_zlib is not None and 1 <= DEFAULT_GZIP_LEVEL <= 3 else 'zlib'} {DEFAULT_GZIP_LEVEL}"
    if default not in codecs:
        spent, size = compress_with(lambda: _gzip_compressor(DEFAULT_GZIP_LEVEL))
        codecs[default] = {"seconds": spent, "ratio": raw_bytes / size}
    results["default_codec"] = default
    results["codecs"] = codecs
    results["seconds"] = seconds
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("extract", "cpu", "setup"))
    parser.add_argument("--company", required=True)
    parser.add_argument("--data-type", default="invoices")
    parser.add_argument("--bucket", default="codat-landing")
    parser.add_argument("--label", default="run")
    parser.add_argument("--hook-params", default="", help="JSON: the operator's hook_params")
    parser.add_argument("--writer-options", default="", help="experiment, JSON: S3DatasetWriter keyword arguments")
    parser.add_argument("--patch", action="append", default=[], help="experiment: module.attr=JSON")
    parser.add_argument("--no-gc-pause", action="store_true", help="experiment: decode with the GC running")
    parser.add_argument("--profile", default="", help="write a cProfile of every thread here")
    parser.add_argument("--records", type=int, default=0, help="cpu: records to read")
    parser.add_argument("--page-size", type=int, default=500, help="cpu: page size to read with")
    parser.add_argument("--repeat", type=int, default=5, help="setup: extractions to time")
    parser.add_argument("--window-start", default="2024-03-01T01:00:00Z", help="setup: the window")
    parser.add_argument("--window-end", default="2024-03-02T01:00:00Z", help="setup: the window")
    parser.add_argument("--zlib-levels", type=int, nargs="*", default=[1, 2, 6])
    args = parser.parse_args()
    result = {"extract": extract, "cpu": cpu, "setup": setup}[args.mode](args)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
