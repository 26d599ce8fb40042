"""
Extract self-contained JSON Schemas from Codat's OpenAPI specs, for the fake Codat API's tests.

Usage::

    python scripts/extract_codat_schemas.py --spec-dir /path/to/codat-openapi \\
        [--out tests/testing/codat_schemas]

The spec directory holds copies of Codat's published specs (github.com/codatio/oas): the current
ones under ``oas-1d1fab12/yaml/`` and the 2023 Accounting spec under ``oas-cd398093/yaml/``. Each
record schema is taken from the ``200`` response the spec declares for the list endpoint at the
catalog path, so the files describe what that endpoint returns, not a schema picked by name.

Codat's specs are not plain JSON Schema, so the output is normalised:

* every ``$ref`` (JSON pointers into ``#/components/...``, into a schema's own non-standard
  ``definitions``, and sometimes into ``#/paths/...``) is inlined; a recursive reference becomes
  ``{"type": "object"}`` at the point where it recurs;
* OpenAPI 3.0's ``nullable: true`` (which Codat still uses in 3.1 specs and JSON Schema ignores) is
  turned into ``anyOf: [<schema>, {"type": "null"}]``;
* a ``type`` that holds a whole schema (a bug in the 2023 Accounting spec) is replaced by it;
* documentation-only keys (descriptions, examples, titles, ``x-*`` extensions, ``definitions``)
  are dropped to keep the files small.

The files are committed; tests never read the spec directory. Re-run this script only to refresh
them from a newer spec copy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

_CURRENT = "oas-1d1fab12/yaml"
_ACCOUNTING_2023 = "oas-cd398093/yaml/Codat-Accounting.yaml"
_LENDING = f"{_CURRENT}/Codat-Lending.yaml"
_PAYABLES = f"{_CURRENT}/Codat-Sync-Payables-v1.yaml"
_BANKING = f"{_CURRENT}/Codat-Banking.yaml"
_PLATFORM = f"{_CURRENT}/Codat-Platform.yaml"

_COMPANY = "/companies/{companyId}/data/"
_CONNECTION = "/companies/{companyId}/connections/{connectionId}/data/"

#: Output name -> (spec file, list or snapshot endpoint path). Names are catalog data-type names.
DATA_TYPE_SOURCES: dict[str, tuple[str, str]] = {
    **{
        name: (_LENDING, _COMPANY + name)
        for name in (
            "accounts",
            "customers",
            "suppliers",
            "invoices",
            "creditNotes",
            "payments",
            "bills",
            "billPayments",
            "billCreditNotes",
            "journalEntries",
            "journals",
        )
    },
    **{name: (_PAYABLES, _COMPANY + name) for name in ("taxRates", "trackingCategories", "paymentMethods")},
    **{name: (_ACCOUNTING_2023, _COMPANY + name) for name in ("items", "purchaseOrders", "salesOrders")},
    **{
        name: (_LENDING, _CONNECTION + name)
        for name in ("accountTransactions", "bankAccounts", "directCosts", "directIncomes", "transfers")
    },
    "bankTransactions": (_LENDING, _CONNECTION + "bankAccounts/{accountId}/bankTransactions"),
    **{
        name: (_BANKING, _CONNECTION + name)
        for name in (
            "banking-accounts",
            "banking-transactions",
            "banking-accountBalances",
            "banking-transactionCategories",
        )
    },
    "info": (_LENDING, _COMPANY + "info"),
    "balanceSheet": (_LENDING, _COMPANY + "financials/balanceSheet"),
    "profitAndLoss": (_LENDING, _COMPANY + "financials/profitAndLoss"),
    "cashFlowStatement": (_LENDING, _COMPANY + "financials/cashFlowStatement"),
}

#: Platform schemas, by output name -> JSON pointer in the Platform spec.
PLATFORM_SCHEMAS: dict[str, str] = {
    "company": "#/components/schemas/Company",
    "connection": "#/components/schemas/Connection",
    "paging": "#/components/schemas/PagingInfo",
    "error": "#/components/schemas/ErrorMessage",
    "dataStatus": "#/components/schemas/DataStatus",
    "pullOperation": "#/components/schemas/PullOperation",
}

# itemReceipts is in the catalog but no spec copy has a schema for it (it is only a dataType key).
_DROPPED_KEYS = {"description", "examples", "example", "title", "definitions", "discriminator", "externalDocs"}


class _Resolver:
    """Inlines JSON-pointer ``$ref``s of one spec document and normalises OpenAPI-isms."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"only internal references are supported, got {ref!r}")
        node: Any = self._document
        # A URI fragment: percent-decode it, then split it as a JSON pointer.
        for token in unquote(ref[2:]).split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def resolve(self, node: Any, stack: tuple[str, ...] = ()) -> Any:
        if isinstance(node, list):
            return [self.resolve(item, stack) for item in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        nullable = node.pop("nullable", False) is True
        ref = node.pop("$ref", None)
        out = {
            key: self.resolve(value, stack)
            for key, value in node.items()
            if key not in _DROPPED_KEYS and key != "properties" and not key.startswith("x-")
        }
        # ``properties`` maps names to schemas: a property called "description" must survive.
        if "properties" in node:
            out["properties"] = {name: self.resolve(s, stack) for name, s in node["properties"].items()}
        if ref is not None:
            target = {"type": "object"} if ref in stack else self.resolve(self.pointer(ref), (*stack, ref))
            if not out:
                out = target
            elif set(out) <= {"readOnly", "writeOnly", "deprecated", "format"}:
                out = {**target, **out}
            else:
                out = {"allOf": [target, out]}
        if isinstance(out.get("type"), dict):
            # The 2023 Accounting spec writes ``type: {type: string, enum: [...]}`` for item types.
            inner = out.pop("type")
            out = {**out, **inner}
        out = _simplify_all_of(out)
        if nullable:
            out = {"anyOf": [out, {"type": "null"}]}
        return out


def _simplify_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the empty ``allOf`` members left where a member only held a description."""
    if "allOf" not in schema:
        return schema
    members = [member for member in schema["allOf"] if member]
    rest = {key: value for key, value in schema.items() if key != "allOf"}
    if not members:
        return rest
    if len(members) == 1 and not rest:
        return members[0]
    return {**rest, "allOf": members}


def _response_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    response = document["paths"][path]["get"]["responses"]["200"]
    if "$ref" in response:
        response = _Resolver(document).pointer(response["$ref"])
    return response["content"]["application/json"]["schema"]


def _record_schema(envelope: dict[str, Any]) -> dict[str, Any] | None:
    """The ``results`` item schema of a resolved paged envelope, or None if it is not one."""
    for part in envelope.get("allOf", [envelope]):
        results = part.get("properties", {}).get("results")
        if results is not None:
            return results["items"]
    return None


def extract(spec_dir: Path, out_dir: Path) -> list[Path]:
    """
    Write one schema file per data type and platform object.

    :param spec_dir: the directory holding ``oas-1d1fab12/`` and ``oas-cd398093/``.
    :param out_dir: where to write ``<name>.json`` files.
    :return: the files written.
    """
    documents: dict[str, dict[str, Any]] = {}

    def load(relative: str) -> dict[str, Any]:
        if relative not in documents:
            with open(spec_dir / relative, encoding="utf-8") as handle:
                documents[relative] = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        return documents[relative]

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def write(name: str, schema: dict[str, Any], source: str) -> None:
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$comment": source, **schema}
        target = out_dir / f"{name}.json"
        target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        written.append(target)

    for name, (spec, path) in DATA_TYPE_SOURCES.items():
        document = load(spec)
        resolved = _Resolver(document).resolve(_response_schema(document, path))
        record = _record_schema(resolved)
        write(f"data_{name}", record if record is not None else resolved, f"{spec} GET {path} 200")
    platform = load(_PLATFORM)
    for name, pointer in PLATFORM_SCHEMAS.items():
        write(f"platform_{name}", _Resolver(platform).resolve({"$ref": pointer}), f"{_PLATFORM} {pointer}")
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--spec-dir", type=Path, required=True, help="directory holding Codat's specs")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "tests" / "testing" / "codat_schemas",
        help="output directory (default: tests/testing/codat_schemas)",
    )
    args = parser.parse_args(argv)
    for path in extract(args.spec_dir, args.out):
        print(f"{path.stat().st_size:>8}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
