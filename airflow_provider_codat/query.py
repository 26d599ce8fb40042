"""Build and check Codat query expressions (the ``query`` parameter of Codat's list endpoints).

Codat's query language is ``field op value`` terms joined with ``&&`` / ``||`` and grouped with
``{ }``. Values are unquoted and the language has no escaping, so a value that contains an operator
character cannot be expressed at all: this module refuses such values instead of sending a filter
that means something else.

Everything here returns the *raw* expression (``modifiedDate>=2024-01-01T00:00:00Z``). It is
URL-encoded exactly once, by ``requests``, when the hook passes it as a query parameter; encoding it
here as well would make Codat see ``%3E%3D`` as literal text.

.. code-block:: python

    from airflow_provider_codat.query import Field, combine, window

    unpaid = (Field("amountDue") > 0) & (Field("currency") == "GBP")
    query = combine(window(start, end), unpaid, "metadata.isDeleted!=true")

Values are formatted by :func:`format_value`: timezone-aware datetimes as UTC
``YYYY-MM-DDTHH:MM:SSZ`` (with ``.ffffff`` only when the microseconds are not zero, so whole-second
datetimes give the short form Codat's own examples use), dates as ``YYYY-MM-DD``, booleans as
``true``/``false`` and numbers as plain decimal text.
"""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from airflow_provider_codat.exceptions import InvalidQueryError

__all__ = [
    "COMPARISON_OPERATORS",
    "MAX_QUERY_LENGTH",
    "Field",
    "Query",
    "combine",
    "format_value",
    "validate_query",
    "window",
]

#: Codat's documented limit: a query must be *under* 2048 characters, so the longest accepted
#: expression has 2047. Measured on the raw expression, before URL encoding.
MAX_QUERY_LENGTH = 2048

#: Comparison operators, two-character ones first so the parser matches ``>=`` before ``>``.
COMPARISON_OPERATORS = ("!=", ">=", "<=", "=", "~", ">", "<")

AND = "&&"
OR = "||"

# Characters that end a value in Codat's grammar. With no quoting or escaping, a value holding one
# of them would be read as (part of) an operator, a connective or a group.
_SPECIAL_CHARACTERS = frozenset("=!~<>&|{}")

_FIELD_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*", re.ASCII)
_OPERATOR_LIST = ", ".join(COMPARISON_OPERATORS)


def _check_length(text: str) -> str:
    if len(text) >= MAX_QUERY_LENGTH:
        raise InvalidQueryError(
            f"Codat query is {len(text)} characters long; Codat accepts at most {MAX_QUERY_LENGTH - 1} "
            f"(its limit is under {MAX_QUERY_LENGTH}). Use a narrower filter: fewer terms or values, "
            f"or split the read into several queries."
        )
    return text


class Query:
    """
    A Codat query expression. Build one from :class:`Field` comparisons, join with ``&`` and ``|``.

    ``q1 & q2`` gives ``q1&&q2`` and ``q1 | q2`` gives ``q1||q2``. When an ``&&`` joins an
    ``||`` expression, or an ``||`` joins an ``&&`` expression, the inner one is wrapped in
    ``{ }``: Codat's docs ask for braces whenever AND and OR meet, so precedence is never guessed.
    ``str(query)`` gives the raw expression and checks Codat's length limit.

    Python's ``and``/``or``/``not`` cannot be overloaded, so using a query as a truth value raises
    ``TypeError`` rather than silently dropping half of ``a == 1 and b == 2``.
    """

    __slots__ = ("_connective", "_text")

    def __init__(self, text: str, *, _connective: str | None = None):
        # Private: build queries with Field, Query.raw, window or combine, which validate.
        self._text = text
        self._connective = _connective

    @classmethod
    def raw(cls, text: str) -> Query:
        """
        Wrap a query written by hand, after checking it with :func:`validate_query`.

        :param text: a Codat query expression, e.g. ``{totalAmount>100&&currency=GBP}||status=Paid``.
        :return: the query, with surrounding whitespace removed.
        """
        stripped, connective = _parse(text)
        return cls(stripped, _connective=connective)

    def render(self) -> str:
        """
        The raw expression, for a ``query`` request parameter (never URL-encoded here).

        :raises InvalidQueryError: if the expression is too long for Codat.
        """
        return _check_length(self._text)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"Query({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Query):
            return self._text == other._text
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._text)

    def __bool__(self) -> bool:
        raise TypeError(
            "A Codat Query has no truth value: join queries with & (AND) and | (OR), "
            "not with the Python keywords and/or."
        )

    def __and__(self, other: Query | str) -> Query:
        other_query = _as_query(other)
        if other_query is None:
            return NotImplemented
        return _join(AND, (self, other_query))

    def __rand__(self, other: str) -> Query:
        other_query = _as_query(other)
        if other_query is None:
            return NotImplemented
        return _join(AND, (other_query, self))

    def __or__(self, other: Query | str) -> Query:
        other_query = _as_query(other)
        if other_query is None:
            return NotImplemented
        return _join(OR, (self, other_query))

    def __ror__(self, other: str) -> Query:
        other_query = _as_query(other)
        if other_query is None:
            return NotImplemented
        return _join(OR, (other_query, self))


def _as_query(value: object) -> Query | None:
    if isinstance(value, Query):
        return value
    if isinstance(value, str):
        return Query.raw(value)
    return None


def _join(connective: str, parts: tuple[Query, ...] | list[Query]) -> Query:
    texts = []
    for part in parts:
        # An expression joined by the other connective must be grouped; one joined by the same
        # connective needs nothing, since && and || are associative.
        if part._connective is not None and part._connective != connective:
            texts.append("{" + part._text + "}")
        else:
            texts.append(part._text)
    if len(texts) == 1:
        return parts[0]
    return Query(connective.join(texts), _connective=connective)


class Field:
    """
    A field of a Codat record, compared with Python operators to make a :class:`Query`.

    ``Field("totalAmount") > 100`` gives ``totalAmount>100``; ``Field("name").contains("Ltd")``
    gives ``name~Ltd``. Nested fields use dots: ``Field("metadata.isDeleted") != True``.

    :param name: letters, digits and underscores, in dot-separated segments.
    """

    __slots__ = ("name",)

    def __init__(self, name: str):
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise InvalidQueryError(
                f"Invalid Codat field name {name!r}: use letters, digits and underscores, with dots "
                f"between the parts of a nested field (e.g. 'metadata.isDeleted')."
            )
        self.name = name

    def __repr__(self) -> str:
        return f"Field({self.name!r})"

    def _compare(self, operator: str, value: Any) -> Query:
        try:
            text = format_value(value)
        except InvalidQueryError as exc:
            raise InvalidQueryError(f"Cannot compare Codat field {self.name!r}: {exc}") from None
        return Query(f"{self.name}{operator}{text}")

    # Comparisons build queries rather than booleans, so Field is deliberately unhashable.
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, value: object) -> Query:  # type: ignore[override]
        return self._compare("=", value)

    def __ne__(self, value: object) -> Query:  # type: ignore[override]
        return self._compare("!=", value)

    def __gt__(self, value: Any) -> Query:
        return self._compare(">", value)

    def __ge__(self, value: Any) -> Query:
        return self._compare(">=", value)

    def __lt__(self, value: Any) -> Query:
        return self._compare("<", value)

    def __le__(self, value: Any) -> Query:
        return self._compare("<=", value)

    def contains(self, value: str) -> Query:
        """
        ``field~value``: the field's text contains ``value`` (Codat supports it on strings only).

        :param value: the text to look for.
        """
        if not isinstance(value, str):
            raise InvalidQueryError(
                f"Cannot compare Codat field {self.name!r}: contains (~) takes text, "
                f"got {value!r} ({type(value).__name__})."
            )
        return self._compare("~", value)


def format_value(value: Any) -> str:
    """
    Format a Python value as Codat query text.

    - timezone-aware ``datetime``: converted to UTC, ``YYYY-MM-DDTHH:MM:SSZ``, with ``.ffffff``
      before the ``Z`` only when the microseconds are not zero. Naive datetimes are refused: Codat
      compares in UTC, and guessing the zone would shift the filter silently.
    - ``date``: ``YYYY-MM-DD``. ``bool``: ``true``/``false``.
    - ``int``, ``float``, ``Decimal``: plain decimal text, never an exponent (``1e-07`` becomes
      ``0.0000001``).
    - ``str``: as is, once checked that Codat can express it. Enum members use their value.

    :param value: the value to format.
    :raises InvalidQueryError: for ``None``, naive datetimes, empty strings, strings Codat cannot
        express, non-finite numbers and unsupported types.
    """
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        raise InvalidQueryError(
            "None cannot be queried: Codat's query language cannot match null values. Filter client-side instead."
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _format_datetime(value)
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float | Decimal):
        return _format_number(value)
    if isinstance(value, str):
        return _check_text(str.__str__(value))
    raise InvalidQueryError(
        f"Cannot put {value!r} ({type(value).__name__}) into a Codat query: pass a str, int, float, "
        f"Decimal, bool, date or timezone-aware datetime."
    )


def _format_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidQueryError(
            f"datetime {value.isoformat()} has no timezone, so it could mean any instant: pass a "
            f"timezone-aware datetime, e.g. datetime(2024, 1, 31, tzinfo=timezone.utc) or "
            f"pendulum.datetime(2024, 1, 31). Codat compares dates in UTC."
        )
    utc = value.astimezone(UTC)
    # Built by hand rather than with isoformat(): subclasses (pendulum) format differently, and
    # strftime does not zero-pad years before 1000 on every platform.
    text = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def _format_number(value: float | Decimal) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidQueryError(f"{value!r} cannot be queried: Codat compares finite numbers only.")
        # repr() is the shortest text that round-trips; Decimal then drops the exponent.
        value = Decimal(repr(value))
    elif not value.is_finite():
        raise InvalidQueryError(f"{value!r} cannot be queried: Codat compares finite numbers only.")
    return format(value, "f")


def _check_text(text: str) -> str:
    if not text:
        raise InvalidQueryError(
            "An empty string cannot be queried: Codat's query language has no way to write an empty value."
        )
    for character in text:
        if character in _SPECIAL_CHARACTERS or character < " " or character == "\x7f":
            raise InvalidQueryError(
                f"Value {text!r} contains {character!r}, which Codat's query language cannot express: "
                f"it has no quoting or escaping, so the value would change the query. "
                f"Filter client-side instead, or filter on another field."
            )
    if text != text.strip():
        raise InvalidQueryError(
            f"Value {text!r} starts or ends with whitespace, which Codat's query language cannot "
            f"express: values are unquoted and spaces around them are not part of the value. "
            f"Strip the value, or filter client-side instead."
        )
    return text


def window(
    start: datetime | date | None,
    end: datetime | date,
    field: str = "modifiedDate",
) -> Query:
    """
    The half-open window ``[start, end)`` on a date field: ``field>=START&&field<END``.

    Consecutive windows that share a boundary never both include a record at that instant.

    :param start: the first instant included, or ``None`` for no lower bound (``field<END`` only).
    :param end: the first instant excluded.
    :param field: the field to filter on; Codat's incremental cursor is ``modifiedDate``.
    :raises InvalidQueryError: if ``end`` is not after ``start``, or either is naive.
    """
    column = Field(field)
    if end is None:
        raise InvalidQueryError(f"A window on {field!r} needs an end: pass the first instant to exclude.")
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and not isinstance(bound, date):
            raise InvalidQueryError(
                f"Window {name} must be a date or a timezone-aware datetime, got {bound!r} ({type(bound).__name__})."
            )
    upper = column < end
    if start is None:
        return upper
    lower = column >= start
    if _as_utc(end) <= _as_utc(start):
        raise InvalidQueryError(
            f"Window end {format_value(end)} is not after window start {format_value(start)}: "
            f"a window on {field!r} includes its start and excludes its end."
        )
    return lower & upper


def _as_utc(value: datetime | date) -> datetime:
    # Dates and aware datetimes compare on one timeline: a date is midnight UTC, as Codat reads it.
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def combine(*parts: Query | str | None) -> str | None:
    """
    AND together query parts into one raw expression for Codat's ``query`` parameter.

    ``None`` parts and blank strings are skipped, so optional filters can be passed as they are.
    Text parts are checked with :func:`validate_query`. Parts joined by ``||`` are wrapped in
    ``{ }``.

    :param parts: :class:`Query` objects, query text, or ``None``.
    :return: the expression, or ``None`` when there is nothing to filter on.
    :raises InvalidQueryError: if a part is malformed or the result is too long for Codat.
    """
    queries: list[Query] = []
    for part in parts:
        if part is None:
            continue
        if isinstance(part, str):
            if not part.strip():
                continue
            queries.append(Query.raw(part))
        elif isinstance(part, Query):
            queries.append(part)
        else:
            raise InvalidQueryError(
                f"Cannot use {part!r} ({type(part).__name__}) as a Codat query: pass a Query, query text, or None."
            )
    if not queries:
        return None
    return _join(AND, queries).render()


def validate_query(text: str) -> str:
    """
    Check that hand-written query text is well formed, before it is sent to Codat.

    Checks that braces balance, that every term is ``field op value`` with a known operator and a
    non-empty value, that ``&&``/``||`` join two terms (none dangling), that ``&&`` and ``||`` are
    not mixed without braces, and the length limit. Whitespace between tokens is allowed, as in
    Codat's own examples (``{totalAmount > 100 || totalAmount < 50} && status != paid``).

    :param text: the query.
    :return: the query with leading and trailing whitespace removed.
    :raises InvalidQueryError: naming the 0-based position in the stripped query and what was
        expected there.
    """
    return _parse(text)[0]


def _parse(text: str) -> tuple[str, str | None]:
    """Validate ``text``; return it stripped, with its top-level connective (or None)."""
    if not isinstance(text, str):
        raise InvalidQueryError(f"A Codat query must be text, got {type(text).__name__}.")
    stripped = text.strip()
    if not stripped:
        raise InvalidQueryError("Codat query is empty: pass None for no filter.")
    _check_length(stripped)
    parser = _Parser(stripped)
    connective = parser.expression(closing_brace_at=None)
    return stripped, connective


class _Parser:
    """
    Recursive descent over Codat's grammar::

        expression := group (connective group)*      one connective per brace level
        group      := "{" expression "}" | term
        term       := field operator value
    """

    def __init__(self, text: str):
        self.text = text
        self.position = 0

    def fail(self, expected: str, position: int | None = None) -> InvalidQueryError:
        at = self.position if position is None else position
        found = repr(self.text[at]) if at < len(self.text) else "the end of the query"
        return InvalidQueryError(
            f"Invalid Codat query {self.text!r}: expected {expected} at position {at}, found {found}."
        )

    def skip_spaces(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def peek(self, size: int = 1) -> str:
        return self.text[self.position : self.position + size]

    def expression(self, closing_brace_at: int | None) -> str | None:
        connective: str | None = None
        expected_group = "a field name or '{'"
        while True:
            self.group(expected_group)
            self.skip_spaces()
            if self.position >= len(self.text):
                if closing_brace_at is not None:
                    raise self.fail(f"'}}' (to close the '{{' opened at position {closing_brace_at})")
                return connective
            found = self.peek(2)
            if found in (AND, OR):
                if connective is not None and found != connective:
                    raise InvalidQueryError(
                        f"Invalid Codat query {self.text!r}: {found!r} at position {self.position} "
                        f"follows {connective!r} at the same level; group one side with {{ }} to say "
                        f"which applies first."
                    )
                connective = found
                self.position += 2
                expected_group = f"a field name or '{{' after {found!r}"
                continue
            if self.peek() == "}":
                if closing_brace_at is None:
                    raise InvalidQueryError(
                        f"Invalid Codat query {self.text!r}: '}}' at position {self.position} closes no '{{'."
                    )
                return connective
            expected = "'&&', '||', '}' or the end of the query"
            if closing_brace_at is None:
                expected = "'&&', '||' or the end of the query"
            error = self.fail(expected)
            if self.peek() in _SPECIAL_CHARACTERS:
                # Most often a value holding an operator character, e.g. name=A&B or name=Hi!.
                error = InvalidQueryError(
                    f"{error} Values cannot contain any of = ! ~ < > & | {{ }}: Codat's query language has no escaping."
                )
            raise error

    def group(self, expected: str) -> None:
        self.skip_spaces()
        if self.peek() == "{":
            opened_at = self.position
            self.position += 1
            self.expression(closing_brace_at=opened_at)
            self.position += 1  # the closing brace, checked by expression()
            return
        self.term(expected)

    def term(self, expected: str) -> None:
        match = _FIELD_NAME.match(self.text, self.position)
        if match is None:
            raise self.fail(expected)
        self.position = match.end()
        self.skip_spaces()
        operator = next((op for op in COMPARISON_OPERATORS if self.text.startswith(op, self.position)), None)
        if operator is None:
            raise self.fail(f"an operator ({_OPERATOR_LIST}) after field {match.group()!r}")
        self.position += len(operator)
        self.skip_spaces()
        start = self.position
        while self.position < len(self.text) and self.text[self.position] not in _SPECIAL_CHARACTERS:
            self.position += 1
        if not self.text[start : self.position].strip():
            raise self.fail(f"a value after {operator!r}", position=start)
