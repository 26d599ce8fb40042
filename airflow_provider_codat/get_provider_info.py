"""Provider metadata read by Airflow's ProvidersManager, including the connection form the 3.x UI shows.

Kept free of imports: Airflow calls this for every process that discovers providers.
"""

from __future__ import annotations


def get_provider_info() -> dict:
    """Return the provider metadata dict Airflow reads through the ``apache_airflow_provider`` entry point."""
    from airflow_provider_codat import __version__

    return {
        "package-name": "airflow-provider-codat",
        "name": "Codat",
        "description": "Move accounting data from the `Codat <https://www.codat.io/>`__ API into Amazon S3.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Codat",
                "external-doc-url": "https://docs.codat.io/",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Codat", "python-modules": ["airflow_provider_codat.hooks.codat"]}],
        "sensors": [
            {"integration-name": "Codat", "python-modules": ["airflow_provider_codat.sensors.codat"]}
        ],
        "transfers": [
            {
                "source-integration-name": "Codat",
                "target-integration-name": "Amazon Simple Storage Service (S3)",
                "python-module": "airflow_provider_codat.transfers.codat_to_s3",
            }
        ],
        "connection-types": [
            {
                "connection-type": "codat",
                "hook-class-name": "airflow_provider_codat.hooks.codat.CodatHook",
                "hook-name": "Codat",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API key", "host": "Base URL (optional)"},
                    "placeholders": {
                        "password": "Your Codat API key (Codat Portal > Developers > API keys)",
                        "host": "https://api.codat.io",
                    },
                },
                "conn-fields": {
                    "page_size": {
                        "label": "Page size",
                        "description": "Records per request, 1 to 5000. Larger pages spend less quota.",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 1,
                            "maximum": 5000,
                            "default": 2000,
                        },
                    },
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "Connect and read timeout of every request.",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": 60},
                    },
                    "max_retries": {
                        "label": "Retries",
                        "description": "Attempts after the first for 408, 429, 5xx, connection errors and timeouts.",
                        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20, "default": 8},
                    },
                    "max_retry_wait": {
                        "label": "Longest wait (seconds)",
                        "description": (
                            "A Retry-After longer than this (the daily quota) fails at once with the reset time."
                        ),
                        "schema": {"type": ["number", "null"], "minimum": 0, "default": 120},
                    },
                    "concurrency": {
                        "label": "Concurrent requests per company",
                        "description": "Pages fetched in parallel; Codat allows at most 10 per company.",
                        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 10, "default": 8},
                    },
                    "allow_insecure_http": {
                        "label": "Allow plain http to a remote host",
                        "description": "Only for a trusted proxy: the API key would travel unencrypted.",
                        "schema": {"type": ["boolean", "null"], "default": False},
                    },
                },
            }
        ],
    }
