"""Tests for the Codat query builder: exact expressions, every error path, and URL encoding once."""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pendulum
import pytest
import requests

from airflow_provider_codat.exceptions import CodatInputError, InvalidQueryError
from airflow_provider_codat.query import (
    MAX_QUERY_LENGTH,
    Field,
    Query,
    combine,
    format_value,
    validate_query,
    window,
)

JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)
FEB_1 = datetime(2024, 2, 1, tzinfo=UTC)


def raises(message: str):
    """pytest.raises for an InvalidQueryError whose text is exactly ``message``."""
    return pytest.raises(InvalidQueryError, match=f"^{re.escape(message)}$")


# Examples from Codat's querying documentation, plus the forms this provider sends.
DOCUMENTED_EXAMPLES = [
    "amountDue>0",
    "currency=GBP",
    "customerRef.id=61",
    "totalAmount>100",
    "status!=Paid",
    "name~Ltd",
    "{totalAmount>100&&currency=GBP}||status=Paid",
    "{totalAmount > 100 || totalAmount < 50} && status != paid",
    "metadata.isDeleted!=true",
    "modifiedDate>2021-01-01",
    "issueDate>=2021-01-01T00:00:00Z",
    "addresses.type=Billing",
    "status!=Complete&&status!=NotSupported",
    "region = uk && owningTeam = invoice-finance",
    "id=81be41e9-5c2c-4064-829c-bca43b5e6f59",
]


class TestValidateQuery:
    @pytest.mark.parametrize("text", DOCUMENTED_EXAMPLES)
    def test_documented_examples_are_accepted_unchanged(self, text):
        assert validate_query(text) == text

    def test_strips_surrounding_whitespace_only(self):
        assert validate_query("  status != paid \n") == "status != paid"

    def test_value_may_contain_inner_spaces(self):
        assert validate_query("customerRef.companyName~Bright Ltd") == "customerRef.companyName~Bright Ltd"

    def test_nested_groups(self):
        text = "{{a=1||b=2}&&c=3}||d<=4"
        assert validate_query(text) == text

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("   ", "Codat query is empty: pass None for no filter."),
            (
                "&&a=1",
                "Invalid Codat query '&&a=1': expected a field name or '{' at position 0, found '&'.",
            ),
            (
                "a=1&&",
                (
                    "Invalid Codat query 'a=1&&': expected a field name or '{' after '&&' at position 5, "
                    "found the end of the query."
                ),
            ),
            (
                "a=1||  ",
                (
                    "Invalid Codat query 'a=1||': expected a field name or '{' after '||' at position 5, "
                    "found the end of the query."
                ),
            ),
            (
                "a=1&&||b=2",
                ("Invalid Codat query 'a=1&&||b=2': expected a field name or '{' after '&&' at position 5, found '|'."),
            ),
            (
                "{a=1",
                (
                    "Invalid Codat query '{a=1': expected '}' (to close the '{' opened at position 0) "
                    "at position 4, found the end of the query."
                ),
            ),
            (
                "{a=1&&{b=2}",
                (
                    "Invalid Codat query '{a=1&&{b=2}': expected '}' (to close the '{' opened at position 0) "
                    "at position 11, found the end of the query."
                ),
            ),
            ("a=1}", "Invalid Codat query 'a=1}': '}' at position 3 closes no '{'."),
            ("{a=1}}", "Invalid Codat query '{a=1}}': '}' at position 5 closes no '{'."),
            ("{}", "Invalid Codat query '{}': expected a field name or '{' at position 1, found '}'."),
            (
                "a 1",
                (
                    "Invalid Codat query 'a 1': expected an operator (!=, >=, <=, =, ~, >, <) after field 'a' "
                    "at position 2, found '1'."
                ),
            ),
            (
                "status",
                (
                    "Invalid Codat query 'status': expected an operator (!=, >=, <=, =, ~, >, <) after field "
                    "'status' at position 6, found the end of the query."
                ),
            ),
            (
                "a=",
                ("Invalid Codat query 'a=': expected a value after '=' at position 2, found the end of the query."),
            ),
            ("a==1", "Invalid Codat query 'a==1': expected a value after '=' at position 2, found '='."),
            (
                "a>=  &&b=1",
                "Invalid Codat query 'a>=  &&b=1': expected a value after '>=' at position 5, found '&'.",
            ),
            (
                "a=1&b=2",
                (
                    "Invalid Codat query 'a=1&b=2': expected '&&', '||' or the end of the query at position 3, "
                    "found '&'. Values cannot contain any of = ! ~ < > & | { }: Codat's query language has no "
                    "escaping."
                ),
            ),
            (
                "name=Hi!",
                (
                    "Invalid Codat query 'name=Hi!': expected '&&', '||' or the end of the query at position 7, "
                    "found '!'. Values cannot contain any of = ! ~ < > & | { }: Codat's query language has no "
                    "escaping."
                ),
            ),
            (
                "{a=1 ~ b}",
                (
                    "Invalid Codat query '{a=1 ~ b}': expected '&&', '||', '}' or the end of the query at "
                    "position 5, found '~'. Values cannot contain any of = ! ~ < > & | { }: Codat's query "
                    "language has no escaping."
                ),
            ),
            (
                "a=1&&b=2||c=3",
                (
                    "Invalid Codat query 'a=1&&b=2||c=3': '||' at position 8 follows '&&' at the same level; "
                    "group one side with { } to say which applies first."
                ),
            ),
            (
                "{a=1||b=2&&c=3}",
                (
                    "Invalid Codat query '{a=1||b=2&&c=3}': '&&' at position 9 follows '||' at the same level; "
                    "group one side with { } to say which applies first."
                ),
            ),
            (
                "meta..isDeleted=true",
                (
                    "Invalid Codat query 'meta..isDeleted=true': expected an operator (!=, >=, <=, =, ~, >, <) "
                    "after field 'meta' at position 4, found '.'."
                ),
            ),
        ],
    )
    def test_malformed_queries_name_position_and_expectation(self, text, message):
        with raises(message):
            validate_query(text)

    def test_not_text(self):
        with raises("A Codat query must be text, got int."):
            validate_query(5)

    def test_length_boundary(self):
        longest = "name=" + "x" * (MAX_QUERY_LENGTH - 1 - len("name="))
        assert len(longest) == 2047
        assert validate_query(longest) == longest
        with raises(
            "Codat query is 2048 characters long; Codat accepts at most 2047 (its limit is under 2048). "
            "Use a narrower filter: fewer terms or values, or split the read into several queries."
        ):
            validate_query(longest + "x")

    def test_length_is_measured_after_stripping(self):
        longest = "name=" + "x" * 2042
        assert validate_query(f"  {longest}  ") == longest

    def test_error_is_a_codat_input_error(self):
        with pytest.raises(CodatInputError):
            validate_query("a=")


class TestField:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (Field("totalAmount") > 100, "totalAmount>100"),
            (Field("currency") == "GBP", "currency=GBP"),
            (Field("status") != "Paid", "status!=Paid"),
            (Field("name").contains("Ltd"), "name~Ltd"),
            (Field("amountDue") >= 0, "amountDue>=0"),
            (Field("amountDue") <= 10.5, "amountDue<=10.5"),
            (Field("totalAmount") < 50, "totalAmount<50"),
            (Field("metadata.isDeleted") != True, "metadata.isDeleted!=true"),  # noqa: E712
            (Field("modifiedDate") > date(2021, 1, 1), "modifiedDate>2021-01-01"),
            (Field("issueDate") >= datetime(2021, 1, 1, tzinfo=UTC), "issueDate>=2021-01-01T00:00:00Z"),
            (Field("addresses.type") == "Billing", "addresses.type=Billing"),
            (Field("customerRef.id") == 61, "customerRef.id=61"),
            (Field("line_2") == "x", "line_2=x"),
        ],
    )
    def test_comparisons(self, query, expected):
        assert isinstance(query, Query)
        assert str(query) == expected

    @pytest.mark.parametrize("name", ["", "a b", "a..b", ".a", "a.", "total-amount", "a=b", "é", None, 5])
    def test_invalid_names(self, name):
        with raises(
            f"Invalid Codat field name {name!r}: use letters, digits and underscores, with dots between "
            f"the parts of a nested field (e.g. 'metadata.isDeleted')."
        ):
            Field(name)

    def test_value_error_names_the_field(self):
        with raises(
            "Cannot compare Codat field 'status': None cannot be queried: Codat's query language cannot "
            "match null values. Filter client-side instead."
        ):
            Field("status") == None  # noqa: B015, E711

    def test_contains_takes_text_only(self):
        with raises("Cannot compare Codat field 'name': contains (~) takes text, got 5 (int)."):
            Field("name").contains(5)

    def test_fields_are_not_hashable(self):
        with pytest.raises(TypeError):
            hash(Field("a"))

    def test_repr(self):
        assert repr(Field("metadata.isDeleted")) == "Field('metadata.isDeleted')"


class TestQueryCombination:
    def test_and_chains_flat(self):
        query = (Field("a") == 1) & (Field("b") == 2) & (Field("c") == 3)
        assert str(query) == "a=1&&b=2&&c=3"

    def test_or_chains_flat(self):
        query = (Field("a") == 1) | (Field("b") == 2) | (Field("c") == 3)
        assert str(query) == "a=1||b=2||c=3"

    def test_documented_grouping(self):
        query = ((Field("totalAmount") > 100) & (Field("currency") == "GBP")) | (Field("status") == "Paid")
        assert str(query) == "{totalAmount>100&&currency=GBP}||status=Paid"

    def test_or_inside_and_is_grouped(self):
        either = (Field("totalAmount") > 100) | (Field("totalAmount") < 50)
        assert str(either & (Field("status") != "paid")) == "{totalAmount>100||totalAmount<50}&&status!=paid"
        assert str((Field("status") != "paid") & either) == "status!=paid&&{totalAmount>100||totalAmount<50}"

    def test_python_precedence_is_kept(self):
        # & binds tighter than | in Python; the braces make Codat read it the same way.
        query = (Field("a") == 1) | (Field("b") == 2) & (Field("c") == 3)
        assert str(query) == "a=1||{b=2&&c=3}"

    def test_groups_nest(self):
        inner = ((Field("a") == 1) | (Field("b") == 2)) & (Field("c") == 3)
        assert str(inner | (Field("d") == 4)) == "{{a=1||b=2}&&c=3}||d=4"

    def test_text_operands_are_validated(self):
        assert str((Field("a") == 1) & "b=2||c=3") == "a=1&&{b=2||c=3}"
        assert str("b=2" | (Field("a") == 1)) == "b=2||a=1"
        with raises("Invalid Codat query 'b=': expected a value after '=' at position 2, found the end of the query."):
            (Field("a") == 1) & "b="

    def test_other_operands_are_refused(self):
        with pytest.raises(TypeError):
            (Field("a") == 1) & 5

    def test_raw_keeps_the_text_and_groups_when_needed(self):
        raw = Query.raw(" {totalAmount > 100 || totalAmount < 50} && status != paid ")
        assert str(raw) == "{totalAmount > 100 || totalAmount < 50} && status != paid"
        assert str(raw & (Field("currency") == "GBP")) == (
            "{totalAmount > 100 || totalAmount < 50} && status != paid&&currency=GBP"
        )
        assert str(raw | (Field("currency") == "GBP")) == (
            "{{totalAmount > 100 || totalAmount < 50} && status != paid}||currency=GBP"
        )

    def test_raw_rejects_malformed_text(self):
        with raises("Invalid Codat query 'a=1}': '}' at position 3 closes no '{'."):
            Query.raw("a=1}")

    def test_truth_value_is_refused(self):
        with pytest.raises(
            TypeError,
            match=re.escape(
                "A Codat Query has no truth value: join queries with & (AND) and | (OR), "
                "not with the Python keywords and/or."
            ),
        ):
            (Field("a") == 1) and (Field("b") == 2)

    def test_equality_and_repr(self):
        assert (Field("a") == 1) == Query.raw("a=1")
        assert hash(Field("a") == 1) == hash(Query.raw("a=1"))
        assert repr(Field("a") == 1) == "Query('a=1')"

    def test_render_checks_length(self):
        query = Field("name") == "x" * 2042
        assert len(query.render()) == 2047
        too_long = Field("name") == "x" * 2043
        with raises(
            "Codat query is 2048 characters long; Codat accepts at most 2047 (its limit is under 2048). "
            "Use a narrower filter: fewer terms or values, or split the read into several queries."
        ):
            str(too_long)
        assert repr(too_long).startswith("Query('name=xxx")


class Colour(enum.Enum):
    RED = "Red"


class TestFormatValue:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (datetime(2024, 1, 31, 10, 21, 9, tzinfo=UTC), "2024-01-31T10:21:09Z"),
            (datetime(2024, 1, 31, 10, 21, 9, 500, tzinfo=UTC), "2024-01-31T10:21:09.000500Z"),
            (datetime(2024, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))), "2023-12-31T23:30:00Z"),
            (datetime(999, 1, 1, tzinfo=UTC), "0999-01-01T00:00:00Z"),
            (pendulum.datetime(2024, 7, 1, 9, tz="Europe/London"), "2024-07-01T08:00:00Z"),
            (date(2021, 1, 1), "2021-01-01"),
            (pendulum.date(2021, 1, 1), "2021-01-01"),
            (True, "true"),
            (False, "false"),
            (0, "0"),
            (-42, "-42"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (1e-07, "0.0000001"),
            (1e16, "10000000000000000"),
            (-2.5e-3, "-0.0025"),
            (Decimal("1E+2"), "100"),
            (Decimal("12.340"), "12.340"),
            (Decimal("-1.5E-5"), "-0.000015"),
            ("GBP", "GBP"),
            ("Bright Ltd", "Bright Ltd"),
            ("8c8d3c4f-0d0e-4f3e-a1b2-000000000001", "8c8d3c4f-0d0e-4f3e-a1b2-000000000001"),
            ("café", "café"),
            (Colour.RED, "Red"),
        ],
    )
    def test_formats(self, value, expected):
        assert format_value(value) == expected

    def test_naive_datetime_is_refused(self):
        with raises(
            "datetime 2024-01-31T00:00:00 has no timezone, so it could mean any instant: pass a "
            "timezone-aware datetime, e.g. datetime(2024, 1, 31, tzinfo=timezone.utc) or "
            "pendulum.datetime(2024, 1, 31). Codat compares dates in UTC."
        ):
            format_value(datetime(2024, 1, 31))

    def test_none_is_refused(self):
        with raises(
            "None cannot be queried: Codat's query language cannot match null values. Filter client-side instead."
        ):
            format_value(None)

    def test_empty_string_is_refused(self):
        with raises("An empty string cannot be queried: Codat's query language has no way to write an empty value."):
            format_value("")

    @pytest.mark.parametrize("character", ["=", "!", "~", "<", ">", "&", "|", "{", "}", "\n", "\t", "\x00"])
    def test_operator_characters_are_refused(self, character):
        value = f"A{character}B Ltd"
        with raises(
            f"Value {value!r} contains {character!r}, which Codat's query language cannot express: it has no "
            f"quoting or escaping, so the value would change the query. Filter client-side instead, or "
            f"filter on another field."
        ):
            format_value(value)

    @pytest.mark.parametrize("value", [" GBP", "GBP ", " "])
    def test_surrounding_whitespace_is_refused(self, value):
        with raises(
            f"Value {value!r} starts or ends with whitespace, which Codat's query language cannot express: "
            f"values are unquoted and spaces around them are not part of the value. Strip the value, or "
            f"filter client-side instead."
        ):
            format_value(value)

    @pytest.mark.parametrize(
        ("value", "shown"),
        [(float("nan"), "nan"), (float("inf"), "inf"), (Decimal("NaN"), "Decimal('NaN')")],
    )
    def test_non_finite_numbers_are_refused(self, value, shown):
        with raises(f"{shown} cannot be queried: Codat compares finite numbers only."):
            format_value(value)

    @pytest.mark.parametrize(("value", "type_name"), [([1, 2], "list"), ({"a": 1}, "dict"), (b"x", "bytes")])
    def test_unsupported_types_are_refused(self, value, type_name):
        with raises(
            f"Cannot put {value!r} ({type_name}) into a Codat query: pass a str, int, float, Decimal, bool, "
            f"date or timezone-aware datetime."
        ):
            format_value(value)


class TestWindow:
    def test_half_open_window(self):
        assert str(window(JAN_1, FEB_1)) == "modifiedDate>=2024-01-01T00:00:00Z&&modifiedDate<2024-02-01T00:00:00Z"

    def test_open_start(self):
        assert str(window(None, FEB_1)) == "modifiedDate<2024-02-01T00:00:00Z"

    def test_other_field_and_dates(self):
        assert str(window(date(2024, 1, 1), date(2024, 2, 1), field="issueDate")) == (
            "issueDate>=2024-01-01&&issueDate<2024-02-01"
        )

    def test_mixed_zones_are_compared_as_instants(self):
        start = datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=2)))  # 2023-12-31T23:00Z
        assert str(window(start, date(2024, 1, 1))) == ("modifiedDate>=2023-12-31T23:00:00Z&&modifiedDate<2024-01-01")

    def test_window_and_more_filters(self):
        query = window(JAN_1, FEB_1) & (Field("metadata.isDeleted") != True)  # noqa: E712
        assert str(query) == (
            "modifiedDate>=2024-01-01T00:00:00Z&&modifiedDate<2024-02-01T00:00:00Z&&metadata.isDeleted!=true"
        )

    @pytest.mark.parametrize("end", [JAN_1, JAN_1 - timedelta(seconds=1)])
    def test_end_must_be_after_start(self, end):
        with raises(
            f"Window end {format_value(end)} is not after window start 2024-01-01T00:00:00Z: a window on "
            f"'modifiedDate' includes its start and excludes its end."
        ):
            window(JAN_1, end)

    def test_naive_bounds_are_refused(self):
        with raises(
            "Cannot compare Codat field 'modifiedDate': datetime 2024-01-01T00:00:00 has no timezone, so it "
            "could mean any instant: pass a timezone-aware datetime, e.g. datetime(2024, 1, 31, "
            "tzinfo=timezone.utc) or pendulum.datetime(2024, 1, 31). Codat compares dates in UTC."
        ):
            window(datetime(2024, 1, 1), FEB_1)

    def test_end_is_required(self):
        with raises("A window on 'modifiedDate' needs an end: pass the first instant to exclude."):
            window(JAN_1, None)

    def test_bounds_must_be_dates(self):
        with raises("Window start must be a date or a timezone-aware datetime, got '2024-01-01' (str)."):
            window("2024-01-01", FEB_1)

    def test_field_is_validated(self):
        with raises(
            "Invalid Codat field name 'modified date': use letters, digits and underscores, with dots "
            "between the parts of a nested field (e.g. 'metadata.isDeleted')."
        ):
            window(JAN_1, FEB_1, field="modified date")


class TestCombine:
    def test_nothing_gives_none(self):
        assert combine() is None
        assert combine(None, None, "", "  ") is None

    def test_single_parts_are_returned_as_is(self):
        assert combine(Field("a") == 1) == "a=1"
        assert combine(" a=1||b=2 ") == "a=1||b=2"

    def test_mix_of_queries_text_and_none(self):
        assert combine(window(JAN_1, FEB_1), None, "metadata.isDeleted!=true", "status=Paid||status=Void") == (
            "modifiedDate>=2024-01-01T00:00:00Z&&modifiedDate<2024-02-01T00:00:00Z"
            "&&metadata.isDeleted!=true&&{status=Paid||status=Void}"
        )

    def test_grouped_text_needs_no_extra_braces(self):
        assert combine("{a=1||b=2}", Field("c") == 3) == "{a=1||b=2}&&c=3"

    def test_text_parts_are_validated(self):
        with raises(
            "Invalid Codat query 'a=1&&': expected a field name or '{' after '&&' at position 5, found the end of the query."
        ):
            combine(Field("b") == 2, "a=1&&")

    def test_other_types_are_refused(self):
        with raises("Cannot use 5 (int) as a Codat query: pass a Query, query text, or None."):
            combine(5)

    def test_length_boundary(self):
        prefix = Field("a") == 1  # "a=1&&" is 5 characters
        fits = "name=" + "x" * (2047 - 5 - 5)
        assert len(combine(prefix, fits)) == 2047
        with raises(
            "Codat query is 2048 characters long; Codat accepts at most 2047 (its limit is under 2048). "
            "Use a narrower filter: fewer terms or values, or split the read into several queries."
        ):
            combine(prefix, fits + "x")


class TestUrlEncoding:
    """The builder returns raw text; requests encodes it exactly once."""

    def _sent(self, query: str) -> str:
        url = requests.Request("GET", "https://api.codat.io/companies/c1/data/invoices", params={"query": query})
        return url.prepare().url

    def test_window_is_encoded_once(self):
        query = combine(window(JAN_1, FEB_1))
        url = self._sent(query)
        assert url == (
            "https://api.codat.io/companies/c1/data/invoices?query="
            "modifiedDate%3E%3D2024-01-01T00%3A00%3A00Z%26%26modifiedDate%3C2024-02-01T00%3A00%3A00Z"
        )
        assert "%25" not in url
        assert parse_qs(urlsplit(url).query) == {"query": [query]}

    def test_groups_and_or_are_encoded_once(self):
        query = combine("{totalAmount>100&&currency=GBP}||status!=Paid", Field("name").contains("Bright Ltd"))
        url = self._sent(query)
        assert urlsplit(url).query == (
            "query=%7B%7BtotalAmount%3E100%26%26currency%3DGBP%7D%7C%7Cstatus%21%3DPaid%7D%26%26name~Bright+Ltd"
        )
        assert "%25" not in url
        assert parse_qs(urlsplit(url).query) == {"query": [query]}
