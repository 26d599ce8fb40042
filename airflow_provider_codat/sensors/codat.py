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

#: ``currentStatus`` values of a sync still under way (Codat's ``PullOperation.status`` enum, which
#: ``dataStatus`` shares). Every value outside these, ``Complete`` and ``NotSupported`` ends a sync for
#: good: ``FetchError``, ``MapError``, ``InternalError``, ``ProcessingError``, ``ValidationError``,
#: ``AuthError``, ``Cancelled``, ``RateLimitError``, ``PermissionsError``, ``PrerequisiteNotMet``, and any
#: status Codat adds later, which fails loudly rather than leaving the sensor to poke until its timeout.
IN_PROGRESS_STATUSES = frozenset(
    {
        "Initial",
        "Queued",
        "Fetching",
        "MapQueued",
        "Mapping",
        "ProcessingQueued",
        "Processing",
        "ValidationQueued",
        "Validating",
    }
)
#: The one ``currentStatus`` of a successful sync.
COMPLETE_STATUS = "Complete"
#: The company's platform does not offer the data type: no sync will ever bring it, and the
#: extraction skips it (Codat answers 404), so it must not hold up the other data types.
NOT_SUPPORTED_STATUS = "NotSupported"


class CodatDataStatusSensor(BaseSensorOperator):
    """
    Wait until Codat's ``dataStatus`` says each data type of a company is synced.

    A data type is ready when its ``currentStatus`` is ``Complete`` and, if ``synced_after`` is
    given, its ``lastSuccessfulSync`` is at or after it (e.g. the time a refresh was queued). A data
    type whose status is ``NotSupported`` (the company's platform does not offer it) counts as
    ready, with a warning, so it does not hold up the others; extracting it then ends skipped.
    While a sync is queued or running (or the data type was never synced) the sensor keeps waiting;
    any other status (``AuthError``, ``FetchError``, ``Cancelled``, ...) fails the task, since Codat
    will not finish that sync without a new refresh. Use ``mode="reschedule"`` so the sensor does not
    hold a worker slot while Codat syncs.

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
            if current == NOT_SUPPORTED_STATUS:
                self.log.warning(
                    "Codat does not support %s for company %s on its platform: not waiting for it; "
                    "extracting it will be skipped.",
                    key,
                    company_id,
                )
                continue
            if current is None or current in IN_PROGRESS_STATUSES:
                waiting.append(f"{key}={current or 'never synced'}")
                continue
            if current != COMPLETE_STATUS:
                raise CodatError(_failure_message(company_id, key, current, entry.get("latestSyncId")))
            last = to_utc_datetime(entry.get("lastSuccessfulSync"), f"{key}.lastSuccessfulSync")
            if last is None or (since is not None and last < since):
                waiting.append(f"{key}={current}")
        if waiting:
            self.log.info("Waiting for Codat to sync company %s: %s", company_id, ", ".join(waiting))
            return False
        return True


#: What to do about a failed sync, for the statuses where the generic advice would mislead.
_ADVICE = {
    "AuthError": "re-link the company's connection in Codat (its credentials no longer work), then queue a new refresh.",
    "PermissionsError": (
        "grant Codat access to this data in the source platform (or re-link the connection with the needed "
        "permissions), then queue a new refresh."
    ),
    "RateLimitError": "the source platform rate-limited Codat: queue a new refresh later.",
    "Cancelled": "the sync was cancelled: queue a new refresh.",
    "PrerequisiteNotMet": (
        "Codat needs something else first (often another data type synced, or a setting on the connection): "
        "see the pull operation in Codat, fix it, then queue a new refresh."
    ),
}
_DEFAULT_ADVICE = "see the pull operation in Codat for why, fix the connection, then queue a new refresh."


def _failure_message(company_id: str, key: str, current: str, sync_id: str | None) -> str:
    """Why the sensor fails: the company, data type, status, and what to do next."""
    operation = f" (pull operation {sync_id})" if sync_id else ""
    return (
        f"Codat's sync of {key} for company {company_id} ended in {current}{operation}: "
        f"{_ADVICE.get(current, _DEFAULT_ADVICE)}"
    )
