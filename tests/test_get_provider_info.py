"""The provider is discoverable by Airflow, and the 3.3 UI gets our connection form from metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from airflow_provider_codat import __version__
from airflow_provider_codat.get_provider_info import get_provider_info


def test_providers_manager_finds_provider_and_hook():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert pm.providers["airflow-provider-codat"].version == __version__
    hook = pm.hooks["codat"]
    assert hook.hook_class_name == "airflow_provider_codat.hooks.codat.CodatHook"
    assert hook.connection_id_attribute_name == "codat_conn_id"
    assert hook.hook_name == "Codat"


def test_ui_connection_form_is_built_from_metadata():
    """What GET /ui/connections/hook_meta returns for 'codat' in Airflow 3.3 (no hook import involved)."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    meta = {m.connection_type: m for m in HookMetaService.hook_meta_data()}["codat"]
    assert meta.hook_name == "Codat"
    standard = meta.standard_fields.model_dump()
    assert standard["password"]["title"] == "API key"
    assert standard["host"]["title"] == "Base URL (optional)"
    assert standard["host"]["placeholder"] == "https://api.codat.io"
    assert standard["host"]["hidden"] is False
    for hidden in ("login", "port", "url_schema"):
        assert standard[hidden]["hidden"] is True, hidden
    extras = meta.extra_fields
    assert set(extras) == {
        "page_size",
        "timeout",
        "max_retries",
        "max_retry_wait",
        "concurrency",
        "allow_insecure_http",
    }
    assert extras["concurrency"]["schema"]["maximum"] == 10
    assert extras["page_size"]["schema"]["maximum"] == 5000
    assert extras["page_size"]["value"] == 2000


def test_airflow_providers_list_cli_shows_it():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "providers", "list", "-o", "plain"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("airflow-provider-codat "))
    assert line.split()[-1] == __version__


def test_metadata_matches_the_hook_defaults():
    """The form's defaults are the hook's defaults: one truth for both."""
    from airflow_provider_codat.hooks.codat import CodatSettings

    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    defaults = CodatSettings(api_key="x")
    for name, spec in fields.items():
        assert spec["schema"]["default"] == getattr(defaults, name), name
