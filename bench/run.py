"""``make bench``: how fast, how frugal and how quota-friendly CodatToS3Operator is, measured locally.

Everything runs on this machine, over real HTTP on 127.0.0.1: the fake Codat API and moto's S3
server as processes (``LocalStack``), and each measured extraction in a fresh process of its own
(``bench/_child.py``) running the real ``CodatToS3Operator.execute()``: hook -> writer -> S3.
All of them share this machine's cores, as the issue's setting says. Prints the tables and writes
``bench/RESULTS.md``; figures are only comparable within one run.

    .venv/bin/python bench/run.py            # the full run (about 13 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # a smoke run (about 2 minutes), smaller sizes
    .venv/bin/python bench/run.py --only throughput,memory

Sections: throughput (and A/B of the hook/writer choices), cpu (CPU per record of each step),
profile (the 0 ms run), memory (peak RSS), pagesize (quota cost), fanout (the example DAG).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import requests

from airflow_provider_codat.hooks.codat import CodatSettings
from airflow_provider_codat.testing.local_stack import LocalStack, airflow_env

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
RESULTS = ROOT / "bench" / "RESULTS.md"
CHILD = ROOT / "bench" / "_child.py"
SECTIONS = ("throughput", "cpu", "profile", "memory", "pagesize", "fanout")
#: The issue's setting: invoices (~2 KB each) read 500 a page.
PAGE_SIZE = 500
LATENCIES_MS = (0, 50)
DEFAULTS = CodatSettings(api_key="-")
#: Five of the example DAG's default data types, for the fan-out.
FANOUT_TYPES = ["invoices", "customers", "bills", "payments", "accounts"]
#: The fan-out run's logical date: it reads the data interval [1 March 01:00, 2 March 01:00).
FANOUT_DATE = "2024-03-02T01:00:00+00:00"
CHILD_TIMEOUT_S = 900


@dataclass
class Plan:
    """Sizes and repetitions of one run."""

    quick: bool
    throughput_sizes: tuple[int, ...] = (20_000, 100_000)
    reps: int = 3
    slow_reps: int = 2  # concurrency 1 at 50 ms: ~15 s a run
    ab_reps: int = 2
    memory_sizes: tuple[int, int] = (10_000, 1_000_000)
    page_sizes: tuple[int, ...] = (500, 1000, 2000, 5000)
    pagesize_records: int = 100_000
    fanout_companies: int = 200
    fanout_records: int = 500

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            throughput_sizes=(20_000,),
            reps=1,
            slow_reps=1,
            ab_reps=1,
            memory_sizes=(10_000, 100_000),
            page_sizes=(500, 2000, 5000),
            pagesize_records=20_000,
            fanout_companies=10,
        )


@dataclass
class Measurement:
    """The runs of one configuration, and the CPU the servers spent meanwhile."""

    label: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(r["records"] / r["wall_s"] for r in self.runs)

    @property
    def rates(self) -> list[float]:
        return [r["records"] / r["wall_s"] for r in self.runs]

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)

    def first(self, key: str) -> Any:
        return self.runs[0][key]


# -- processes ----------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (Linux /proc/stat: user + nice + system + irq)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Bench:
    """One local stack and the measurements taken against it."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.env = {**os.environ, **stack.env}
        self.companies: list[str] = requests.get(f"{stack.codat_url}/_fake/companies", timeout=30).json()
        # LocalStack starts the fake first, then moto.
        self.fake_pid, self.s3_pid = (p.pid for p in stack._processes[:2])
        self.counter = 0

    def set_latency(self, latency_ms: float) -> None:
        answer = requests.post(f"{self.stack.codat_url}/_fake/config", json={"latency_ms": latency_ms}, timeout=30)
        answer.raise_for_status()

    def warm(self, company: str, data_type: str = "invoices") -> None:
        """Have the fake build and sort a record set before anything is timed."""
        headers = {"Authorization": _auth_header()}
        answer = requests.get(
            f"{self.stack.codat_url}/companies/{company}/data/{data_type}",
            params={"page": 1, "pageSize": 1, "orderBy": "id"},
            headers=headers,
            timeout=600,
        )
        answer.raise_for_status()

    def child(self, mode: str, company: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        self.counter += 1
        fake0, s30, busy0 = _cpu_seconds(self.fake_pid), _cpu_seconds(self.s3_pid), _machine_busy_seconds()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = [sys.executable, str(CHILD), mode, "--company", company, "--label", f"m{self.counter}", *args]
        done = subprocess.run(
            command, env=env or self.env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        result = json.loads(lines[-1][len("RESULT ") :])
        result["fake_cpu_s"] = _cpu_seconds(self.fake_pid) - fake0
        result["s3_cpu_s"] = _cpu_seconds(self.s3_pid) - s30
        # CPU that processes other than ours used meanwhile: ~0 on a quiet machine. Other work on
        # the same cores (another test run) shows here, and makes every figure of the run slower.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
        ours = child_cpu + result["fake_cpu_s"] + result["s3_cpu_s"]
        result["others_cpu_s"] = max(0.0, _machine_busy_seconds() - busy0 - ours)
        return result

    def measure(self, label: str, company: str, reps: int, *args: str) -> Measurement:
        measurement = Measurement(label)
        for _ in range(reps):
            run = self.child("extract", company, *args)
            measurement.runs.append(run)
            print(
                f"  {label:<44} {run['records'] / run['wall_s']:>9,.0f} records/s  {run['wall_s']:6.2f} s  "
                f"cpu {run['cpu_s']:5.2f} s  fake {run['fake_cpu_s']:4.2f} s  peak RSS {run['peak_rss_kib'] / 1024:6.0f} MiB  "
                f"{run['requests']} requests",
                flush=True,
            )
        return measurement


def _auth_header() -> str:
    import base64

    from airflow_provider_codat.testing.fake_codat.config import DEFAULT_API_KEY

    return "Basic " + base64.b64encode(DEFAULT_API_KEY.encode()).decode()


def _hook(page_size: int | None = None, concurrency: int | None = None) -> str:
    params = {"page_size": page_size, "concurrency": concurrency}
    return json.dumps({k: v for k, v in params.items() if v is not None})


# -- sections -----------------------------------------------------------------------------


def run_throughput(bench: Bench, plan: Plan, datasets: dict[int, str], out: dict[str, Any]) -> None:
    print("\n== Throughput: invoices, page size 500, concurrency default vs 1 ==")
    cells = []
    for latency in LATENCIES_MS:
        bench.set_latency(latency)
        for records in plan.throughput_sizes:
            company = datasets[records]
            for concurrency in (DEFAULTS.concurrency, 1):
                slow = concurrency == 1 and latency > 0 and records >= 100_000
                reps = plan.slow_reps if slow else plan.reps
                label = f"{records:,} records, {latency} ms, concurrency {concurrency}"
                m = bench.measure(label, company, reps, "--hook-params", _hook(PAGE_SIZE, concurrency))
                cells.append({"records": records, "latency_ms": latency, "concurrency": concurrency, "m": m})
    out["throughput"] = cells

    # A/B of the choices made in the hook and writer, on the 0 ms, largest-size cell.
    bench.set_latency(0)
    records = max(plan.throughput_sizes)
    company = datasets[records]
    print(f"\n== A/B on {records:,} records, 0 ms, default concurrency ==")
    hook = _hook(PAGE_SIZE)
    variants = [
        ("as shipped", ["--hook-params", hook]),
        (
            "gzip level 6 (the previous default)",
            ["--hook-params", hook, "--writer-options", '{"compression_level": 6}'],
        ),
        ("records decoded with the GC running (before)", ["--hook-params", hook, "--no-gc-pause"]),
    ]
    if _installed("isal"):
        variants.append(
            (
                "zlib instead of ISA-L",
                ["--hook-params", hook, "--patch", "airflow_provider_codat.s3_writer._isal_zlib=null"],
            )
        )
    out["ab"] = [bench.measure(label, company, plan.ab_reps, *args) for label, args in variants]
    out["ab_records"] = records


def run_cpu(bench: Bench, plan: Plan, datasets: dict[int, str], out: dict[str, Any]) -> None:
    print("\n== CPU per record of each step (no HTTP, no S3) ==")
    bench.set_latency(0)
    records = max(plan.throughput_sizes)
    result = bench.child(
        "cpu",
        datasets[records],
        "--records",
        str(records),
        "--page-size",
        str(PAGE_SIZE),
        "--zlib-levels",
        "1",
        "2",
        "6",
    )
    per = 1e6 / result["records"]
    for step, seconds in result["seconds"].items():
        print(f"  {step:<12} {seconds * per:6.2f} us/record")
    for codec, numbers in result["codecs"].items():
        print(f"  gzip {codec:<8} {numbers['seconds'] * per:6.2f} us/record  ratio {numbers['ratio']:.2f}")
    out["cpu"] = result


def run_profile(bench: Bench, plan: Plan, datasets: dict[int, str], out: dict[str, Any]) -> None:
    print("\n== Profile of the 0 ms run (every thread, CPU clocks) ==")
    bench.set_latency(0)
    records = max(plan.throughput_sizes)
    path = WORK / "profile-0ms.pstats"
    run = bench.child("extract", datasets[records], "--hook-params", _hook(PAGE_SIZE), "--profile", str(path))
    stats = pstats.Stats(str(path))
    total = sum(row[2] for row in stats.stats.values())  # tottime
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)
    top = []
    for (filename, line, name), (_cc, calls, tottime, _cumtime, _callers) in rows[:15]:
        where = name if filename == "~" else f"{_short_path(filename)}:{line}({name})"
        top.append({"function": where, "calls": calls, "seconds": tottime, "share": tottime / total})
        print(f"  {tottime:7.3f} s {tottime / total:6.1%}  {where}")
    categories: dict[str, float] = {}
    for func, (_cc, _calls, tottime, _cumtime, callers) in stats.stats.items():
        for category, seconds in _attribute(stats.stats, func, tottime, callers, depth=0):
            categories[category] = categories.get(category, 0.0) + seconds
    out["profile"] = {
        "records": run["records"],
        "wall_s": run["wall_s"],
        "total_s": total,
        "top": top,
        "categories": dict(sorted(categories.items(), key=lambda kv: kv[1], reverse=True)),
        "path": str(path.relative_to(ROOT)),
    }


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "airflow_provider_codat/", "lib/python3"):
        if marker in filename:
            return (
                filename.split(marker, 1)[1]
                if marker != "airflow_provider_codat/"
                else "airflow_provider_codat/" + filename.split(marker, 1)[1]
            )
    return Path(filename).name


def _attribute(table: dict, func: tuple, seconds: float, callers: dict, depth: int) -> list[tuple[str, float]]:
    """A function's own time by category; builtins and stdlib helpers count for their callers'."""
    category = _category(*func[::2])
    if category != "other" or depth >= 4 or not callers:
        return [(category, seconds)]
    # Split the time between the callers in proportion to the time spent for each of them.
    total = sum(entry[2] for entry in callers.values()) or 1.0
    shares = []
    for caller, entry in callers.items():
        caller_callers = table.get(caller, (0, 0, 0, 0, {}))[4]
        shares += _attribute(table, caller, seconds * entry[2] / total, caller_callers, depth + 1)
    return shares


def _category(filename: str, name: str) -> str:
    """Which step of the pipeline a profiled function belongs to."""
    if "msgspec.json.Decoder" in name:
        return "parse JSON (msgspec decode)"
    if "encode_lines" in name:
        return "serialise JSON Lines (msgspec)"
    if "Compress" in name or "isal" in name.lower() or "zlib" in name:
        return "gzip"
    if "sha256" in name or "hashlib" in filename:
        return "checksum (sha256)"
    if any(part in filename for part in ("botocore", "boto3", "s3transfer", "/moto/")):
        return "S3 client (boto3/botocore)"
    if any(part in filename for part in ("requests/", "urllib3", "http/client", "socket", "ssl", "urllib/", "email/")):
        return "HTTP client (requests/urllib3)"
    if "recv_into" in name or "sendall" in name or "_socket" in name:
        return "HTTP client (requests/urllib3)"
    if "airflow_provider_codat" in filename:
        return "provider code (paging, dedup ids, writer, operator; includes freeing records)"
    if "tenacity" in filename or "concurrent/futures" in filename or "threading" in filename or "queue" in filename:
        return "retries, threads and futures"
    if "logging" in filename or "structlog" in filename or "airflow/" in filename:
        return "logging and Airflow"
    return "other"


def run_memory(bench: Bench, plan: Plan, datasets: dict[int, str], out: dict[str, Any]) -> None:
    print("\n== Memory: peak RSS of one extraction with the operator's defaults ==")
    bench.set_latency(0)
    out["memory"] = [
        (records, bench.measure(f"{records:,} records, defaults", datasets[records], 1))
        for records in plan.memory_sizes
    ]


def run_pagesize(bench: Bench, plan: Plan, datasets: dict[int, str], out: dict[str, Any]) -> None:
    print(f"\n== Page size: quota, speed and memory, {plan.pagesize_records:,} records at 50 ms ==")
    bench.set_latency(50)
    company = datasets[plan.pagesize_records]
    out["pagesize"] = [
        (size, bench.measure(f"page size {size}", company, 1, "--hook-params", _hook(size))) for size in plan.page_sizes
    ]
    out["pagesize_records"] = plan.pagesize_records
    bench.set_latency(0)


def _linked_companies(count: int) -> int:
    """How many of the fake's first ``count`` companies have a readable Accounting connection."""
    # Index % 20 == 19 has only a PendingAuth one (never linked); 18's Unlinked one is still read.
    return sum(1 for index in range(count) if index % 20 != 19)


def run_fanout(plan: Plan, out: dict[str, Any]) -> None:
    total = next(
        n
        for n in range(plan.fanout_companies, 10 * plan.fanout_companies + 10)
        if _linked_companies(n) >= plan.fanout_companies
    )
    print(
        f"\n== Fan-out: airflow dags test example_codat_to_s3, {plan.fanout_companies} companies x "
        f"{len(FANOUT_TYPES)} data types =="
    )
    work = WORK / "fanout"
    shutil.rmtree(work, ignore_errors=True)
    home = work / "airflow"
    home.mkdir(parents=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    quota = json.dumps({"daily_quota": 100_000_000})
    with LocalStack(
        companies=total, records=plan.fanout_records, fake_args=["--config", quota], log_dir=work / "logs"
    ) as stack:
        env = airflow_env(home, ROOT / "dags", **stack.env)
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
        fake_pid = stack._processes[0].pid
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run(
            [airflow, "pools", "set", "codat", "8", "Codat extractions"], env=env, check=True, capture_output=True
        )
        fake0 = _cpu_seconds(fake_pid)
        started = time.monotonic()
        with open(work / "dags-test.log", "wb") as log:
            done = subprocess.run(
                [
                    airflow,
                    "dags",
                    "test",
                    "example_codat_to_s3",
                    FANOUT_DATE,
                    "-c",
                    json.dumps({"data_types": FANOUT_TYPES}),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        wall = time.monotonic() - started
        fake_cpu = _cpu_seconds(fake_pid) - fake0
        manifests = [m for _key, m in stack.manifests()]
        fake_requests = requests.get(f"{stack.codat_url}/_fake/stats", timeout=30).json()["requests"]
        # One task's fixed costs, timed step by step in a separate process on the same stack.
        bench = Bench(stack)
        setup = bench.child("setup", bench.companies[0], "--data-type", FANOUT_TYPES[0])
    with sqlite3.connect(home / "airflow.db") as db:
        states = dict(
            db.execute("select coalesce(state, 'none'), count(*) from task_instance group by state").fetchall()
        )
        (ti_seconds,) = db.execute(
            "select sum((julianday(end_date) - julianday(start_date)) * 86400) from task_instance"
        ).fetchone()
    extractions = [m for m in manifests]
    result = {
        "returncode": done.returncode,
        "wall_s": wall,
        "companies": plan.fanout_companies,
        "fake_companies": total,
        "data_types": FANOUT_TYPES,
        "task_instances": sum(states.values()),
        "states": states,
        "ti_seconds": ti_seconds or 0.0,
        "extractions": len(extractions),
        "execute_seconds": sum(m.get("duration_seconds", 0.0) for m in extractions),
        "records": sum(m.get("records", 0) for m in extractions),
        "requests": fake_requests,
        "fake_cpu_s": fake_cpu,
        "records_per_set": plan.fanout_records,
        "setup": {name: statistics.median(values) for name, values in setup["steps"].items()},
        "setup_records": statistics.median(setup["records"]),
        "setup_requests": setup["requests"],
    }
    print(
        f"  {result['task_instances']} task instances in {wall:.0f} s: {result['task_instances'] / wall:.2f}/s; "
        f"{result['extractions']} extractions, {result['records']:,} records; execute() total "
        f"{result['execute_seconds']:.0f} s; states {states}"
    )
    out["fanout"] = result


# -- report -------------------------------------------------------------------------------


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gib": mem_kib / 1024 / 1024,
        "python": platform.python_version(),
        "versions": {
            name: _installed(name)
            for name in ("msgspec", "isal", "requests", "urllib3", "boto3", "moto", "apache-airflow")
        },
        "commit": commit + (" with uncommitted changes" if dirty else ""),
    }


def _fmt_rate(m: Measurement) -> str:
    rates = m.rates
    spread = f" ({min(rates):,.0f}-{max(rates):,.0f})" if len(rates) > 1 else ""
    return f"{m.rate:,.0f}{spread}"


def report(plan: Plan, out: dict[str, Any], info: dict[str, Any], elapsed: float) -> str:
    lines: list[str] = []
    add = lines.append
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    add("# Benchmark results")
    add("")
    add(
        f"Written by `make bench` (`bench/run.py{' --quick' if plan.quick else ''}`) on {now}, commit "
        f"{info['commit'] or 'unknown'}, in {elapsed / 60:.1f} minutes. "
        + ("**Quick mode: smaller sizes and one repetition; smoke figures, not the issue's.** " if plan.quick else "")
        + "Figures compare only within this run. How to read them: `bench/README.md`."
    )
    add("")
    add("## Machine and setting")
    add("")
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["versions"].items())
    add(f"- {info['cores']} cores ({info['cpu']}), {info['memory_gib']:.1f} GiB memory, Python {info['python']}.")
    add(f"- {versions}.")
    add(
        "- Everything on these cores at once, over real HTTP on 127.0.0.1: the fake Codat API (uvicorn, "
        "one process, pre-encoded records, `latency_ms` added to every request), moto's S3 server, and "
        "the extraction under measurement: a fresh process per run calling `CodatToS3Operator.execute()` "
        "(hook -> writer -> S3 multipart upload), JSON Lines + gzip, a full read of one company's invoices "
        f"(~{out.get('cpu', {}).get('json_bytes_per_record', 2100):,.0f} bytes each as JSON)."
    )
    add(
        "- records/s = records / wall time of `execute()` (connections and the boto3 client are resolved "
        "before the clock starts, as every task does once). Median of the repetitions, range in brackets. "
        "CPU columns: seconds of CPU (user + system) of the extraction process, the fake and the S3 server "
        "during the run."
    )

    runs = [run for m in _measurements(out) for run in m.runs]
    if runs:
        others = [run.get("others_cpu_s", 0.0) for run in runs]
        quiet = sum(others) / len(others) < 0.5
        add(
            f"- Other processes on the machine used {sum(others):.1f} CPU-seconds during the {len(runs)} "
            f"measured runs (at most {max(others):.1f} s in one run, {sum(others) / len(others):.2f} s on "
            "average). "
            + (
                "The machine was quiet."
                if quiet
                else "**The machine was not quiet: other work competed for the cores, so these figures "
                "are lower, and noisier, than on an idle machine.** The `others CPU s` columns show where."
            )
        )
        add("")
    if "throughput" in out:
        cells = out["throughput"]
        add("## 2. Throughput")
        add("")
        add(
            f"Invoices, page size {PAGE_SIZE}; concurrency {DEFAULTS.concurrency} is the hook's default. "
            "Floors: P·L/C = pages × latency / concurrency; CPU = records × (parse + serialise + compress) "
            "per record on one core, from section 3's table."
        )
        add("")
        add(
            "| records | latency | concurrency | records/s | wall s | requests | extraction CPU s | fake CPU s "
            "| S3 CPU s | others CPU s | peak RSS MiB | P·L/C floor s | CPU floor s | wall / max(floor) |"
        )
        add("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        cpu_per_record = _cpu_floor_per_record(out)
        for cell in cells:
            m = cell["m"]
            wall = m.median("wall_s")
            pages = m.first("requests")
            pl = pages * cell["latency_ms"] / 1000 / cell["concurrency"]
            cpu_floor = cell["records"] * cpu_per_record if cpu_per_record else None
            floor = max(pl, cpu_floor or 0)
            add(
                f"| {cell['records']:,} | {cell['latency_ms']} ms | {cell['concurrency']} | {_fmt_rate(m)} | "
                f"{wall:.2f} | {pages} | {m.median('cpu_s'):.2f} | {m.median('fake_cpu_s'):.2f} | "
                f"{m.median('s3_cpu_s'):.2f} | {m.median('others_cpu_s'):.1f} | "
                f"{m.median('peak_rss_kib') / 1024:.0f} | {pl:.2f} | "
                + (f"{cpu_floor:.2f} | {wall / floor:.2f}× |" if cpu_floor else "n/a | n/a |")
            )
        add("")
        add("**Targets**")
        add("")
        for latency in LATENCIES_MS:
            for records in plan.throughput_sizes:
                fast = _cell(cells, records, latency, DEFAULTS.concurrency)
                slow = _cell(cells, records, latency, 1)
                ratio = fast.rate / slow.rate
                line = f"- {records:,} records, {latency} ms: {fast.rate:,.0f} records/s"
                if records >= 100_000:
                    line += f" — target ≥ 15,000: **{'met' if fast.rate >= 15_000 else 'missed'}**"
                line += f"; {ratio:.2f}× concurrency 1"
                if latency == 50:
                    line += f" — target ≥ 3×: **{'met' if ratio >= 3 else 'missed'}**"
                add(line + ".")
        add("")
        add(
            "At 0 ms latency concurrency buys little: one process decodes, re-encodes and compresses "
            "every record while holding the GIL, so the run is CPU-bound either way (compare the wall time "
            "with the extraction's CPU). At 50 ms, concurrency 1 waits P·L; the default keeps "
            f"{DEFAULTS.concurrency} requests in flight and is CPU-bound again."
        )
        add("")
    if "ab" in out:
        add(f"### What the hook and writer choices are worth ({out['ab_records']:,} records, 0 ms)")
        add("")
        add("Same run, one choice reverted at a time (see `bench/README.md` for the changes themselves):")
        add("")
        add("| variant | records/s | vs shipped | extraction CPU s | others CPU s | peak RSS MiB | stored MB |")
        add("|---|---:|---:|---:|---:|---:|---:|")
        base = out["ab"][0]
        for m in out["ab"]:
            add(
                f"| {m.label} | {_fmt_rate(m)} | {m.rate / base.rate - 1:+.0%} | {m.median('cpu_s'):.2f} | "
                f"{m.median('others_cpu_s'):.1f} | "
                f"{m.median('peak_rss_kib') / 1024:.0f} | {m.first('stored_bytes') / 1e6:.1f} |"
            )
        add("")

    if "cpu" in out:
        cpu = out["cpu"]
        per = 1e6 / cpu["records"]
        add("## 3. Where the time goes")
        add("")
        add(
            f"CPU per record of each step, on one core, without HTTP or S3: the dataset's {cpu['pages']} page "
            f"bodies ({cpu['records']:,} records, {cpu['body_bytes'] / 1e6:.0f} MB) read once, then each step "
            "timed on the thread's CPU clock (best of 3)."
        )
        add("")
        add("| step | µs/record | note |")
        add("|---|---:|---|")
        notes = {
            "envelope": "page reader thread: checks the body is JSON, decodes only the paging envelope",
            "parse": "records to dicts (msgspec), cyclic GC paused for the call",
            "serialise": "dicts to JSON Lines (msgspec `encode_lines`), 1,000-record chunks",
        }
        for step, seconds in cpu["seconds"].items():
            add(f"| {step} | {seconds * per:.2f} | {notes.get(step, '')} |")
        default = cpu["default_codec"]
        for codec, numbers in cpu["codecs"].items():
            mark = " (**default**)" if codec == default else ""
            add(f"| gzip, {codec}{mark} | {numbers['seconds'] * per:.2f} | compression ratio {numbers['ratio']:.2f} |")
        add("")
        floor_us = _cpu_floor_per_record(out) * 1e6
        add(f"CPU floor used above: envelope + parse + serialise + {default} = {floor_us:.1f} µs/record.")
        if "throughput" in out:
            records = max(plan.throughput_sizes)
            m = _cell(out["throughput"], records, 0, DEFAULTS.concurrency)
            used_us = m.median("cpu_s") / records * 1e6
            add("")
            add(
                f"End to end ({records:,} records, 0 ms, concurrency {DEFAULTS.concurrency}) the extraction "
                f"process used {used_us:.1f} µs of CPU per record (median run): the records' own steps above "
                f"are {floor_us:.1f} µs ({floor_us / used_us:.0%}); the other {used_us - floor_us:.1f} µs are "
                "the HTTP client, the S3 client and checksum, paging and the id checks, freeing the decoded "
                "records and the collector's young-generation passes. The fake and the S3 server used "
                f"{(m.median('fake_cpu_s') + m.median('s3_cpu_s')) / records * 1e6:.1f} µs per record on the "
                "other core."
            )
        if not cpu.get("isal"):
            add("")
            add(ISAL_NOTE)
        add("")
    if "profile" in out:
        prof = out["profile"]
        add(f"### Profile of the 0 ms run ({prof['records']:,} records, every thread, CPU time)")
        add("")
        add(
            f"cProfile in every thread, each timed by its own CPU clock (`{prof['path']}`); "
            f"{prof['total_s']:.2f} s of CPU in all, wall time {prof['wall_s']:.2f} s. cProfile charges "
            "each Python call, so many-small-call code (requests, urllib3, id checks) looks several times "
            "dearer here than it is; C calls (decode, encode, compress) are timed as they are. The "
            "unprofiled figures above are the better guide to proportions. A builtin's time is counted "
            "for the code that called it."
        )
        add("")
        add("| where | CPU s | share |")
        add("|---|---:|---:|")
        for name, seconds in prof["categories"].items():
            add(f"| {name} | {seconds:.2f} | {seconds / prof['total_s']:.0%} |")
        add("")
        add("| function (own time) | calls | CPU s | share |")
        add("|---|---:|---:|---:|")
        for row in prof["top"]:
            add(f"| `{row['function']}` | {row['calls']} | {row['seconds']:.3f} | {row['share']:.1%} |")
        add("")

    if "memory" in out:
        add("## 4. Memory")
        add("")
        add(
            f"Peak RSS (`getrusage` ru_maxrss) of the extraction process, operator defaults (page size "
            f"{DEFAULTS.page_size}, concurrency {DEFAULTS.concurrency}); baseline = RSS after imports and "
            "connections, before `execute()`."
        )
        add("")
        add("| records | peak RSS MiB | baseline MiB | peak − baseline MiB | records/s | S3 files | others CPU s |")
        add("|---:|---:|---:|---:|---:|---:|---:|")
        for records, m in out["memory"]:
            peak, base = m.first("peak_rss_kib") / 1024, m.first("rss_before_kib") / 1024
            add(
                f"| {records:,} | {peak:.0f} | {base:.0f} | {peak - base:.0f} | {m.rate:,.0f} | {m.first('files')} "
                f"| {m.first('others_cpu_s'):.1f} |"
            )
        (small, m_small), (large, m_large) = out["memory"]
        difference = (m_large.first("peak_rss_kib") - m_small.first("peak_rss_kib")) / 1024
        add("")
        add(
            f"Difference {large:,} vs {small:,} records: {difference:.0f} MiB — target < 50 MB: "
            f"**{'met' if difference < 50 else 'missed'}**."
        )
        add("")
    if "pagesize" in out:
        add(f"## 5. Quota cost and page size ({out['pagesize_records']:,} invoices, 50 ms)")
        add("")
        add("| page size | requests | requests per 10,000 records | records/s | peak RSS MiB |")
        add("|---:|---:|---:|---:|---:|")
        for size, m in out["pagesize"]:
            requests_made = m.first("requests")
            default = " (default)" if size == DEFAULTS.page_size else ""
            add(
                f"| {size}{default} | {requests_made} | {requests_made / m.first('records') * 10_000:.1f} | "
                f"{m.rate:,.0f} | {m.first('peak_rss_kib') / 1024:.0f} |"
            )
        add("")
        add(PAGE_SIZE_NOTE.format(default=DEFAULTS.page_size, per10k=10_000 / DEFAULTS.page_size))
        add("")
    if "fanout" in out:
        f = out["fanout"]
        add(f"## 6. Fan-out: the example DAG, {f['companies']} companies × {len(f['data_types'])} data types")
        add("")
        overhead = (f["ti_seconds"] - f["execute_seconds"]) / max(f["extractions"], 1)
        add(
            f"`airflow dags test example_codat_to_s3 {FANOUT_DATE}` with `data_types` = {', '.join(f['data_types'])}; "
            f"the fake serves {f['fake_companies']} companies ({f['companies']} with a linked Accounting "
            f"connection), {f['records_per_set']} records per set, of which the one-day window holds about 1/91. "
            f"Exit code {f['returncode']}."
        )
        add("")
        add(
            "| wall s | task instances | task instances/s | extractions | records | Codat requests | Σ task time s | Σ execute() s | Airflow s per extraction | fake CPU s |"
        )
        add("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        add(
            f"| {f['wall_s']:.0f} | {f['task_instances']} | {f['task_instances'] / f['wall_s']:.2f} | "
            f"{f['extractions']} | {f['records']:,} | {f['requests']:,} | {f['ti_seconds']:.0f} | "
            f"{f['execute_seconds']:.0f} | {overhead:.2f} | {f['fake_cpu_s']:.0f} |"
        )
        add("")
        setup = f.get("setup", {})
        per_task = f["wall_s"] / max(f["task_instances"], 1)
        airflow_per = (f["ti_seconds"] - f["execute_seconds"]) / max(f["task_instances"], 1)
        startup = f["wall_s"] - f["ti_seconds"]
        add(
            f"Task states: {f['states']}. `dags test` runs task instances one at a time in one process, so "
            f"this is Airflow's per-task cost, not its parallelism: {per_task:.2f} s per task instance = "
            f"{airflow_per:.2f} s of Airflow's task machinery (Σ task time − Σ `execute()`, per task) + "
            f"{f['execute_seconds'] / max(f['extractions'], 1):.2f} s in `execute()` + "
            f"{startup / max(f['task_instances'], 1):.2f} s of DAG-run overhead between tasks "
            f"({startup:.0f} s in all: parsing, scheduling)."
        )
        execute_per = f["execute_seconds"] / max(f["extractions"], 1)
        if setup:
            plain = setup["s3_client"] + setup["codat_settings"] + setup["execute_rest"]
            add("")
            add(
                f"The same small extraction timed in a plain process (median of 5, about {f['setup_records']:.0f} "
                f"records, {f['setup_requests']} Codat request): {setup['s3_client'] * 1000:.0f} ms to build "
                f"the boto3 S3 client (`S3Hook.get_conn()`, once per task), {setup['codat_settings'] * 1000:.1f} "
                f"ms to resolve the Codat connection, {setup['execute_rest'] * 1000:.0f} ms for the work itself "
                "(the Codat read, S3 head, upload, manifest PUT, listing earlier attempts): "
                f"{plain * 1000:.0f} ms, against {execute_per * 1000:.0f} ms for `execute()` inside Airflow's task "
                "runner, where the difference goes to the task context (not broken down here)."
            )
            airflow_share = (
                airflow_per + startup / max(f["task_instances"], 1) + max(execute_per - plain, 0)
            ) / per_task
            add("")
            add(
                f"Per task instance, then: about {airflow_share:.0%} is Airflow (task machinery, DAG-run "
                f"overhead, the task context), {setup['s3_client'] / per_task:.0%} building the S3 client and "
                f"{setup['execute_rest'] / per_task:.0%} moving data."
            )
        add("")
        big = None
        if out.get("throughput"):
            biggest = max(c["records"] for c in out["throughput"])
            big = _cell(out["throughput"], biggest, 0, DEFAULTS.concurrency).rate
        add(
            f"**Airflow is the bottleneck of a fan-out of small datasets**: {f['records']:,} records took "
            f"{f['wall_s']:.0f} s ({f['records'] / f['wall_s']:.0f} records/s, {f['task_instances'] / f['wall_s']:.2f} "
            "task instances/s)"
            + (f", where one large extraction moved {big:,.0f} records/s (section 2)" if big else "")
            + ". Codat (one request per extraction here) and S3 are idle most of the time. What helps: more "
            "task slots in parallel (a real executor with the `codat` pool, within Codat's per-company "
            "limit), or fewer, larger tasks (several data types or companies per task, sharing one S3 client)."
        )
        add("")
    return "\n".join(lines) + "\n"


def _measurements(out: dict[str, Any]) -> list[Measurement]:
    found = [cell["m"] for cell in out.get("throughput", [])] + list(out.get("ab", []))
    found += [m for _records, m in out.get("memory", [])] + [m for _size, m in out.get("pagesize", [])]
    return found


def _to_json(value: Any) -> Any:
    if isinstance(value, Measurement):
        return {"__measurement__": value.label, "runs": value.runs}
    raise TypeError(f"not JSON: {value!r}")


def _from_json(value: dict[str, Any]) -> Any:
    if "__measurement__" in value:
        return Measurement(value["__measurement__"], value["runs"])
    return value


def _cell(cells: list[dict[str, Any]], records: int, latency: int, concurrency: int) -> Measurement:
    return next(
        c["m"] for c in cells if (c["records"], c["latency_ms"], c["concurrency"]) == (records, latency, concurrency)
    )


def _cpu_floor_per_record(out: dict[str, Any]) -> float | None:
    cpu = out.get("cpu")
    if not cpu:
        return None
    seconds = sum(cpu["seconds"].values()) + cpu["codecs"][cpu["default_codec"]]["seconds"]
    return seconds / cpu["records"]


ISAL_NOTE = (
    "`isal` is not installed here, so gzip runs on zlib. Measured on this machine with isal 1.9.1 "
    "importable (this harness, the same 100,000 invoices): ISA-L level 2 1.5 µs/record, ratio 9.26, "
    "against zlib level 2 7.1 µs/record, ratio 8.66, and zlib level 6 16.9 µs/record, ratio 11.56. End to "
    "end (0 ms, page size 500, median of 3 on a quiet machine): zlib 2 26,848 records/s, ISA-L 2 28,561 "
    "(+6 %, 12 % less CPU, 7 % smaller files), zlib 6 20,336. The writer uses ISA-L for levels 1-3 "
    "whenever the package is importable."
)

PAGE_SIZE_NOTE = (
    "Why the default page size is {default} ({per10k:.0f} requests per 10,000 records): Codat counts "
    "requests against a per-company rate limit and a daily quota, so fewer, larger pages are cheaper; "
    "Codat documents 5,000 as the maximum but has been seen to cap pages at 2,000, and the hook follows "
    "the page size the envelope reports either way. Past a few hundred records a page, speed is flat: the "
    "run is CPU-bound. What grows with the page size is memory: `concurrency` pages are held as bytes "
    "while the current one is decoded (and the caller still holds the previous one), so 5,000-record "
    "pages cost the most RSS for 2.5× fewer requests than 2,000."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~2 minute smoke run with smaller sizes")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the report")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sections' figures from the last run (bench/.work/results.json) and redo --only's",
    )
    args = parser.parse_args()
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    plan = Plan.make(args.quick)
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"{info['cores']} cores, {info['memory_gib']:.1f} GiB, {info['cpu']}")
    out: dict[str, Any] = {}

    # Two stacks, so that the fake serving the throughput runs does not also hold a million invoices.
    groups = [
        (("throughput", "cpu", "profile", "pagesize"), {*plan.throughput_sizes, plan.pagesize_records}),
        (("memory",), set(plan.memory_sizes)),
    ]
    runners = {
        "throughput": run_throughput,
        "cpu": run_cpu,
        "profile": run_profile,
        "pagesize": run_pagesize,
        "memory": run_memory,
    }
    for names, wanted_sizes in groups:
        chosen = [name for name in names if name in sections]
        if not chosen:
            continue
        sizes = sorted(wanted_sizes if "pagesize" in chosen or chosen == ["memory"] else set(plan.throughput_sizes))
        # Record sets are built by the first request (Bench.warm), not --warm: LocalStack waits only 30 s.
        fake_args = ["--config", json.dumps({"daily_quota": 100_000_000})]
        for index, records in enumerate(sizes):
            fake_args += ["--company-records", f"{index}:invoices={records}"]
        print(f"\nStarting the fake Codat API ({', '.join(f'{n:,}' for n in sizes)} invoices) and the S3 server ...")
        with LocalStack(companies=len(sizes), records=10, fake_args=fake_args, log_dir=WORK / "logs") as stack:
            bench = Bench(stack)
            datasets = {records: bench.companies[index] for index, records in enumerate(sizes)}
            for company in datasets.values():
                bench.warm(company)
            for name in chosen:
                runners[name](bench, plan, datasets, out)
    if "fanout" in sections:
        run_fanout(plan, out)

    raw = WORK / ("results-quick.json" if plan.quick else "results.json")
    if args.merge and raw.exists():
        previous = json.loads(raw.read_text(), object_hook=_from_json)
        out = {**{k: v for k, v in previous.items() if not k.startswith("_")}, **out}
        elapsed = previous.get("_elapsed", 0.0)
    else:
        elapsed = 0.0
    elapsed += time.monotonic() - started
    raw.write_text(json.dumps({**out, "_elapsed": elapsed}, default=_to_json))
    text = report(plan, out, info, elapsed)
    args.out.write_text(text)
    print()
    print(text)
    print(f"Wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
