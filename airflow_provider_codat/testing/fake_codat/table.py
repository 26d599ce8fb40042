"""One list endpoint's records, stored the way the fake serves them fastest.

Each record is JSON-encoded once; a page body is the encoded records joined. ``modifiedDate`` is
also kept as epoch seconds with a sorted index, so a window query narrows by bisection instead of
decoding records. Selections (filtered and ordered positions) are cached per query and ``orderBy``
until a record changes, so paging through a large result costs only the join.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any

import msgspec

from airflow_provider_codat.testing.fake_codat.query import (
    compile_predicate,
    lookup,
    modified_date_bounds,
    parse_query,
    sort_key,
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_MODIFIED = ("modifiedDate",)
_ID = ("id",)
_MAX_CACHED_SELECTIONS = 64


class Table:
    """
    Encoded records in insertion order, which is also the default order of a list endpoint.

    Not thread-safe: the owner serialises access.

    :param keys: a stable key per record (its ``id``, or a synthetic key for id-less types).
    :param bodies: the JSON-encoded records.
    :param modified: each record's ``modifiedDate`` as epoch seconds, for types that have one.
    :param keyed_by_id: whether the keys are the records' ``id`` fields.
    """

    def __init__(
        self, keys: list[str], bodies: list[bytes], modified: list[int] | None = None, keyed_by_id: bool = True
    ) -> None:
        self.keys = keys
        # When keys are the records' ids, ``id`` (which the hook orders by) needs no decoding.
        self._keyed_by_id = keyed_by_id
        self.bodies = bodies
        self.modified = modified
        self._positions = {key: position for position, key in enumerate(keys)}
        self._by_date: list[int] | None = None
        self._dates: list[int] | None = None
        self._selections: dict[tuple[str | None, str | None], list[int]] = {}
        self._decoded_position = -1
        self._decoded: Any = None

    @classmethod
    def from_documents(cls, keys: list[str], documents: Sequence[dict[str, Any]]) -> Table:
        """A table of records without ``modifiedDate`` (companies, connections)."""
        return cls(keys, [_encode(document) for document in documents])

    def __len__(self) -> int:
        return len(self.bodies)

    def document(self, position: int) -> dict[str, Any]:
        """A fresh decoded copy of one record."""
        return _decode(self.bodies[position])

    def documents(self) -> list[dict[str, Any]]:
        """Fresh decoded copies of every record, in insertion order."""
        return [_decode(body) for body in self.bodies]

    def position(self, key: str) -> int:
        """
        The position of a record.

        :raises KeyError: if no record has this key.
        """
        return self._positions[key]

    def put(self, position: int, document: dict[str, Any], modified: int | None = None) -> None:
        """
        Replace one record (``position == len(self)`` appends one).

        :param position: where.
        :param document: the new record; its ``id`` (if any) keeps the record's key.
        :param modified: its ``modifiedDate`` as epoch seconds, for types that have one.
        """
        body = _encode(document)
        if position == len(self.bodies):
            key = str(document.get("id") or f"record-{position}")
            self.keys.append(key)
            self._positions[key] = position
            self.bodies.append(body)
            if self.modified is not None:
                self.modified.append(modified or 0)
        else:
            self.bodies[position] = body
            if self.modified is not None and modified is not None:
                self.modified[position] = modified
        self._by_date = self._dates = None
        self._selections.clear()
        self._decoded_position = -1

    def select(self, query: str | None, order_by: str | None) -> list[int]:
        """
        The positions of the records a list request returns, in order.

        :param query: Codat query expression, or None.
        :param order_by: ``field`` or ``-field``, or None for insertion order.
        :raises QueryError: on a malformed query.
        """
        cache_key = (query or None, order_by or None)
        cached = self._selections.get(cache_key)
        if cached is not None:
            return cached
        positions: Sequence[int] = range(len(self.bodies))
        if query:
            expression = parse_query(query)
            bounds = modified_date_bounds(expression) if self.modified is not None else None
            if bounds is not None:
                positions = self._positions_between(*bounds)
            predicate = compile_predicate(expression, self._value, self._instant)
            positions = [position for position in positions if predicate(position)]
        if order_by:
            path = tuple(order_by.lstrip("-").split("."))
            # sorted() is stable with reverse=True too: tied records keep insertion order.
            positions = sorted(
                positions,
                key=lambda position: sort_key(self._value(position, path)),
                reverse=order_by.startswith("-"),
            )
        selection = list(positions)
        if len(self._selections) >= _MAX_CACHED_SELECTIONS:
            self._selections.clear()
        self._selections[cache_key] = selection
        return selection

    def _positions_between(self, low: float, high: float) -> list[int]:
        if self._by_date is None:
            modified = self.modified
            self._by_date = sorted(range(len(modified)), key=modified.__getitem__)
            self._dates = [modified[position] for position in self._by_date]
        start, stop = bisect_left(self._dates, low), bisect_right(self._dates, high)
        return sorted(self._by_date[start:stop])

    def _value(self, position: int, path: tuple[str, ...]) -> Any:
        if path == _MODIFIED and self.modified is not None:
            return self.modified[position]
        if path == _ID and self._keyed_by_id:
            return self.keys[position]
        # Conditions of one query read the same record in turn: decode it once.
        if position != self._decoded_position:
            self._decoded = _decode(self.bodies[position])
            self._decoded_position = position
        return lookup(self._decoded, path)

    def _instant(self, position: int, path: tuple[str, ...]) -> float | None:
        if path == _MODIFIED and self.modified is not None:
            return self.modified[position]
        return None


def encode(value: Any) -> bytes:
    """JSON-encode a value the way every response body is encoded."""
    return _encode(value)
