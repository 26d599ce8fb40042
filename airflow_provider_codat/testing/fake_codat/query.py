"""Codat's query language, as the fake Codat API understands it.

``query`` is ``field op value`` with ops ``=``, ``!=``, ``~`` (contains), ``>``, ``<``, ``>=``,
``<=``, combined with ``&&`` and ``||`` (``&&`` binds tighter) and grouped with ``{ }``. Fields may
be dotted (``metadata.isDeleted``); values are unquoted and run to the next ``&&``, ``||``, ``}`` or
the end.

How a condition compares (Codat documents little of this; these are the fake's rules):

* a value that looks like a date (``YYYY-MM-DD``, optionally with a time, fractional seconds and a
  zone; no zone means UTC) compares as an instant against record strings that parse as dates;
* against a number field the value compares as a number, against a boolean field as
  ``true``/``false`` (only ``=`` and ``!=``);
* against other strings: ``~`` is a case-insensitive "contains", the others compare the text
  exactly (case-sensitive);
* a missing or null field, an array or object, or a value of the wrong type matches only ``!=``
  (so ``metadata.isDeleted!=true`` keeps records without ``metadata``).

A malformed expression raises :class:`QueryError`, which the server answers with a 400.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_codat.testing.fake_codat.config import parse_utc

#: Codat rejects longer query expressions.
MAX_QUERY_LENGTH = 2048

_FIELD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*")
_OPERATOR = re.compile(r"!=|>=|<=|=|~|>|<")
_VALUE_END = re.compile(r"&&|\|\||}")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


class QueryError(ValueError):
    """A query expression Codat would reject with a 400."""


def parse_date(value: str) -> float | None:
    """
    The epoch seconds of a date-like string, or None if it is not one.

    :param value: a query value or a record field.
    :raises QueryError: if it looks like a date but is not a valid one (``2024-13-45``).
    """
    if not _DATE.match(value):
        return None
    try:
        return parse_utc(value).timestamp()
    except ValueError:
        raise QueryError(f"Error parsing query - '{value}' is not a valid date.") from None


@dataclass(frozen=True)
class Condition:
    """One ``field op value`` term."""

    name: str
    op: str
    raw: str
    # The value read every way it may compare, once per query rather than once per record.
    path: tuple[str, ...] = field(init=False)
    date: float | None = field(init=False)
    number: float | None = field(init=False)
    lowered: str = field(init=False)
    boolean: bool | None = field(init=False)

    def __post_init__(self) -> None:
        lowered = self.raw.lower()
        for attribute, value in (
            ("path", tuple(self.name.split("."))),
            ("date", parse_date(self.raw)),
            ("number", float(self.raw) if _NUMBER.match(self.raw) else None),
            ("lowered", lowered),
            ("boolean", {"true": True, "false": False}.get(lowered)),
        ):
            object.__setattr__(self, attribute, value)

    def matches(self, value: Any) -> bool:
        """Whether a record's field value satisfies this condition."""
        op = self.op
        if isinstance(value, bool):
            if self.boolean is None or op not in ("=", "!="):
                return op == "!="
            return _COMPARE[op](value, self.boolean)
        if isinstance(value, int | float):
            if self.number is None or op == "~":
                return op == "!="
            return _COMPARE[op](value, self.number)
        if isinstance(value, str):
            if op == "~":
                return self.lowered in value.lower()
            if self.date is not None:
                instant = _record_date(value)
                if instant is not None:
                    return _COMPARE[op](instant, self.date)
            return _COMPARE[op](value, self.raw)
        return op == "!="

    def matches_instant(self, instant: float) -> bool:
        """Whether a date field holding ``instant`` (epoch seconds) satisfies this condition."""
        if self.date is None or self.op == "~":
            return self.op == "!="
        return _COMPARE[self.op](instant, self.date)


@dataclass(frozen=True)
class Junction:
    """Terms joined by ``&&`` (``all_of``) or ``||``."""

    all_of: bool
    terms: tuple[Condition | Junction, ...]


Expression = Condition | Junction


def _record_date(value: str) -> float | None:
    try:
        return parse_date(value)
    except QueryError:
        return None


def parse_query(text: str) -> Expression:
    """
    Parse a query expression.

    :param text: the decoded ``query`` parameter.
    :raises QueryError: if it is empty, too long or malformed.
    """
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(
            f"Error parsing query - Query is {len(text)} characters long; the limit is {MAX_QUERY_LENGTH}."
        )
    parser = _Parser(text)
    expression = parser.disjunction()
    parser.skip_space()
    if parser.pos != len(text):
        parser.fail()
    return expression


class _Parser:
    """Recursive descent over the expression text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self) -> None:
        raise QueryError(f"Error parsing query - Malformed query. (at character {self.pos + 1})")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def take(self, token: str) -> bool:
        self.skip_space()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def disjunction(self) -> Expression:
        terms = [self.conjunction()]
        while self.take("||"):
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else Junction(False, tuple(terms))

    def conjunction(self) -> Expression:
        terms = [self.term()]
        while self.take("&&"):
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else Junction(True, tuple(terms))

    def term(self) -> Expression:
        if self.take("{"):
            inner = self.disjunction()
            if not self.take("}"):
                self.fail()
            return inner
        name = _FIELD.match(self.text, self.pos)
        if not name:
            self.fail()
        self.pos = name.end()
        op = _OPERATOR.match(self.text, self.pos)
        if not op:
            self.fail()
        self.pos = op.end()
        end = _VALUE_END.search(self.text, self.pos)
        stop = end.start() if end else len(self.text)
        value = self.text[self.pos : stop].strip()
        if not value or "{" in value:
            self.fail()
        self.pos = stop
        return Condition(name.group(1), op.group(0), value)


def lookup(document: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path of a record, or None if any step is missing."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def modified_date_bounds(expression: Expression) -> tuple[float, float] | None:
    """
    The ``modifiedDate`` range a query restricts records to, to narrow it before evaluating.

    Only top-level ``modifiedDate`` comparisons joined by ``&&`` narrow; the full expression is
    still evaluated on the narrowed records, so this only needs to be a superset.

    :return: ``(low, high)`` epoch seconds, inclusive, or None when nothing narrows.
    """
    terms = expression.terms if isinstance(expression, Junction) and expression.all_of else (expression,)
    low, high, narrowed = float("-inf"), float("inf"), False
    for term in terms:
        if isinstance(term, Condition) and term.name == "modifiedDate" and term.date is not None:
            if term.op in (">", ">=", "="):
                low, narrowed = max(low, term.date), True
            if term.op in ("<", "<=", "="):
                high, narrowed = min(high, term.date), True
    return (low, high) if narrowed else None


def compile_predicate(
    expression: Expression,
    value: Callable[[int, tuple[str, ...]], Any],
    instant: Callable[[int, tuple[str, ...]], float | None],
) -> Callable[[int], bool]:
    """
    Turn an expression into a test of record positions.

    :param expression: the parsed query.
    :param value: ``(position, path) -> field value`` of a record.
    :param instant: ``(position, path) -> epoch seconds`` for fields the table keeps as instants
        (``modifiedDate``), or None for other fields; saves parsing dates record by record.
    """
    if isinstance(expression, Condition):
        condition = expression
        path = condition.path

        def test(position: int) -> bool:
            at = instant(position, path)
            if at is not None:
                return condition.matches_instant(at)
            found = value(position, path)
            return condition.op == "!=" if found is None else condition.matches(found)

        return test
    tests = [compile_predicate(term, value, instant) for term in expression.terms]
    if expression.all_of:
        return lambda position: all(test(position) for test in tests)
    return lambda position: any(test(position) for test in tests)


def sort_key(found: Any) -> tuple[int, Any]:
    """An ``orderBy`` key that orders mixed and missing values without raising."""
    if found is None or isinstance(found, dict | list):
        return (3, 0)
    if isinstance(found, bool):
        return (0, int(found))
    if isinstance(found, int | float):
        return (1, found)
    instant = _record_date(found) if isinstance(found, str) else None
    return (0, instant) if instant is not None else (2, str(found))
