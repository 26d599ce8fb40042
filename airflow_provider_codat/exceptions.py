"""The errors this provider raises, in one hierarchy callers can act on.

``CodatError`` is the root. ``CodatInputError`` means the caller asked for something wrong and no
request was sent. ``CodatAPIError`` carries what Codat answered (status, message, correlationId).
``CodatDataUnavailableError`` (not synced yet, or not supported by the platform) is a fact about a
company rather than a failure: the operator ends such tasks skipped.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk.exceptions import AirflowException


class CodatError(AirflowException):
    """Base class of every error raised by this provider."""


class CodatInputError(CodatError, ValueError):
    """Bad input (a parameter, a connection setting, a query): raised before any request is sent."""


class UnknownDataTypeError(CodatInputError, KeyError):
    """The data type is not in the catalog."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidQueryError(CodatInputError):
    """A Codat query is malformed, too long, or has a value Codat's query language cannot express."""


class CodatConnectionError(CodatError):
    """Codat could not be reached (DNS, refused connection, TLS, timeouts), after retries."""


class CodatTLSError(CodatConnectionError):
    """The server's TLS certificate failed verification: not retried, and the key was never sent."""


class CodatAPIError(CodatError):
    """
    Codat answered with an error status.

    :param status_code: the HTTP status.
    :param message: Codat's ``error`` text, or a summary of the body when there is none.
    :param path: the request path (never the query string's secrets: Codat keys are headers).
    :param correlation_id: Codat's ``correlationId``, for Codat support.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        path: str | None = None,
        correlation_id: str | None = None,
        codat_message: str | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.path = path
        self.correlation_id = correlation_id
        self.codat_message = codat_message


class CodatBadRequestError(CodatAPIError):
    """400: Codat rejected the request, usually the query or a paging value."""

    def __init__(self, message: str, *, query: str | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.query = query


class CodatAuthError(CodatAPIError):
    """401/403: the API key is wrong, outdated or belongs to another Codat instance."""


class CodatPlanLimitError(CodatAPIError):
    """402: the Codat plan does not allow this (e.g. the free-plan company cap)."""


class CodatNotFoundError(CodatAPIError):
    """404: the company, connection or resource does not exist."""


class CodatDataUnavailableError(CodatAPIError):
    """The data set cannot be read for this company; a fact about the company, not a failure."""

    #: A short machine-readable reason recorded in manifests and summaries.
    reason = "unavailable"


class CodatDataNotSyncedError(CodatDataUnavailableError):
    """409: Codat has not synced this data type for the company yet."""

    reason = "not_synced"


class CodatDataTypeNotSupportedError(CodatDataUnavailableError, CodatNotFoundError):
    """404: the company's accounting platform does not support this data type."""

    reason = "not_supported"


class CodatNoDataError(CodatDataUnavailableError, CodatNotFoundError):
    """404 "No data available for <data type> for ID …": Codat holds none of this data type for the company."""

    reason = "no_data"


class CodatRateLimitError(CodatAPIError):
    """
    429: rate limited. Retried while Codat's ``Retry-After`` fits within the configured cap;
    raised for good when it does not (typically the daily quota) or when retries ran out.

    :param retry_after: seconds Codat asked us to wait, if it said.
    :param retry_at: when Codat says the limit resets, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        retry_at: datetime | None = None,
        retryable: bool = True,
        **kwargs,
    ):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.retry_at = retry_at
        self.retryable = retryable


class CodatServerError(CodatAPIError):
    """5xx or 408, or a response body cut short: transient, retried, raised when retries ran out."""


class CodatPagingError(CodatError):
    """Codat's paging contradicted itself in a way that could not be recovered (e.g. a repeated page)."""


class CodatNoConnectionError(CodatDataUnavailableError):
    """The company has no connection of the kind a connection-scoped data type needs."""

    reason = "no_connection"
