"""This module contains a sensor that waits until Codat has finished syncing data types for a company."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_provider_codat.data_types import get_data_type
from airflow_provider_codat.exceptions import CodatError
from airflow_provider_codat.hooks.codat import CodatHook, validate_id
from airflow_provider_codat.windows import to_utc_datetime

if TYPE_CHECKING:
    from airflow.sdk import Context

#: ``currentStatus`` values after which a sync will not complete without a new request.
FAILED_STATUSES = frozenset({"FetchError", "MapError", "InternalError", "AuthError", "ValidationError", "NotSupported"})


class CodatDataStatusSensor(BaseSensorOperator):
    """
    Wait until Codat's ``dataStatus`` says each data type of a company is synced.

    A data type is ready when its ``currentStatus`` is ``Complete`` and, if ``synced_after`` is
    given, its ``lastSuccessfulSync`` is at or after it (e.g. the time a refresh was queued). Use
    ``mode="reschedule"`` so the sensor does not hold a worker slot while Codat syncs.

    :param company_id: the Codat company id (templated).
    :param data_types: data type names or keys to wait for (templated).
    :param synced_after: only a sync that finished at or after this time counts (templated;
        a datetime or ISO 8601 text).
    :param codat_conn_id: the Airflow connection of type ``codat``.
    :param hook_params: keyword overrides for the hook.
    """

    template_fields: Sequence[str] = ("company_id", "data_types", "synced_after")

    def __init__(
        self,
        *,
        company_id: str,
        data_types: Sequence[str],
        synced_after: datetime | str | None = None,
        codat_conn_id: str = CodatHook.default_conn_name,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.company_id = company_id
        self.data_types = data_types
        self.synced_after = synced_after
        self.codat_conn_id = codat_conn_id
        self.hook_params = hook_params or {}

    def poke(self, context: Context) -> bool:
        company_id = validate_id(self.company_id, "company id")
        keys = [
            get_data_type(name).key
            for name in ([self.data_types] if isinstance(self.data_types, str) else self.data_types)
        ]
        since = to_utc_datetime(self.synced_after, "synced_after")
        status = CodatHook(self.codat_conn_id, **self.hook_params).get_data_status(company_id)
        waiting = []
        for key in keys:
            entry = status.get(key) or {}
            current = entry.get("currentStatus")
            if current in FAILED_STATUSES:
                raise CodatError(
                    f"Codat's sync of {key} for company {company_id} ended in {current}: fix the connection in "
                    "Codat, then queue a new refresh."
                )
            last = to_utc_datetime(entry.get("lastSuccessfulSync"), f"{key}.lastSuccessfulSync")
            if current != "Complete" or last is None or (since is not None and last < since):
                waiting.append(f"{key}={current or 'never synced'}")
        if waiting:
            self.log.info("Waiting for Codat to sync company %s: %s", company_id, ", ".join(waiting))
            return False
        return True
