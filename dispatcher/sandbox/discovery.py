"""Request bodies checked against a Google API discovery document, as Google's JSON front end checks them.

The FCM sandbox and the tests of every message the engine builds use this one checker over the same
description (``descriptions/fcm.v1.json``), so "the sandbox accepts it" means "Google's published
schema allows it". What the checker reads from a schema: ``type``, ``$ref``, ``properties`` (anything
else is an unknown field), ``additionalProperties``, ``items``, ``enum`` and the formats used by FCM
(``google-duration``, ``google-datetime``, ``int32``, ``float``).

Google's JSON parsing is proto3 JSON: a field may be spelled in lowerCamelCase (as the discovery
document names it) or as its proto name in snake_case (as firebase-admin sends it); enum values are
matched without regard to case (firebase-admin sends ``"high"`` for ``HIGH``); 64-bit and 32-bit
integers may come as JSON numbers or as decimal strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

#: The vendored FCM v1 discovery document (see :func:`fcm_description`).
FCM_DESCRIPTION = "fcm.v1.json"

#: ``google-duration``: seconds with up to nine fractional digits and an ``s`` suffix ("3600s", "3.5s").
_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")
#: ``google-datetime``: RFC 3339 with a ``Z`` or an offset.
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
_INTEGER = re.compile(r"-?\d+")
_INT32 = (-(2**31), 2**31 - 1)
_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True)
class SchemaProblem:
    """The first thing a schema refuses about a value: a message and the dotted field path."""

    message: str
    field: str


@cache
def load_description(name: str = FCM_DESCRIPTION) -> dict[str, Any]:
    """A discovery document vendored under ``dispatcher/sandbox/descriptions`` (parsed once)."""
    text = resources.files("dispatcher.sandbox").joinpath("descriptions").joinpath(name).read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def snake_case(name: str) -> str:
    """The proto field name of a discovery property (``collapseKey`` -> ``collapse_key``)."""
    return _CAMEL_HUMP.sub("_", name).lower()


def _field_names(schema: dict[str, Any]) -> dict[str, str]:
    """Every accepted spelling of a schema's fields -> the discovery name."""
    names: dict[str, str] = {}
    for name in schema.get("properties", {}):
        names[name] = name
        names[snake_case(name)] = name
    return names


class DescriptionChecker:
    """Checks values against the schemas of one discovery document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document["schemas"]
        self._names = {name: _field_names(schema) for name, schema in self.schemas.items()}

    def problem(self, schema_name: str, value: Any, path: str = "") -> SchemaProblem | None:
        """The first problem of ``value`` as an instance of ``schema_name``, or None when it conforms."""
        return self._check({"$ref": schema_name}, value, path)

    def _check(self, spec: dict[str, Any], value: Any, path: str) -> SchemaProblem | None:
        ref = spec.get("$ref")
        if ref is not None:
            return self._object(ref, value, path)
        kind = spec.get("type")
        if kind == "any":
            return None
        if kind == "object":
            return self._map(spec, value, path)
        if kind == "array":
            if not isinstance(value, list):
                return _invalid(path, "a list", value)
            items = spec.get("items", {"type": "any"})
            for index, item in enumerate(value):
                found = self._check(items, item, f"{path}[{index}]")
                if found is not None:
                    return found
            return None
        if kind == "boolean":
            return None if isinstance(value, bool) else _invalid(path, "a boolean", value)
        if kind == "integer":
            return _integer(value, path, spec.get("format"))
        if kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return None if ok else _invalid(path, "a number", value)
        if kind == "string":
            return _string(spec, value, path)
        return None

    def _object(self, schema_name: str, value: Any, path: str) -> SchemaProblem | None:
        if not isinstance(value, dict):
            return _invalid(path, f"an object ({schema_name})", value)
        schema = self.schemas[schema_name]
        names = self._names[schema_name]
        seen: set[str] = set()
        for key, item in value.items():
            name = names.get(key)
            field = f"{path}.{key}" if path else key
            if name is None:
                return SchemaProblem(f"Invalid JSON payload received. Unknown name \"{key}\" at '{path or 'body'}':"
                                     " Cannot find field.", field)
            if name in seen:
                return SchemaProblem(f"Invalid JSON payload received. Field \"{key}\" is given twice.", field)
            seen.add(name)
            found = self._check(schema["properties"][name], item, field)
            if found is not None:
                return found
        return None

    def _map(self, spec: dict[str, Any], value: Any, path: str) -> SchemaProblem | None:
        if not isinstance(value, dict):
            return _invalid(path, "an object", value)
        values = spec.get("additionalProperties")
        if values is None:
            return None
        for key, item in value.items():
            found = self._check(values, item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None


def _invalid(path: str, wanted: str, value: Any) -> SchemaProblem:
    return SchemaProblem(f"Invalid value at '{path}' ({type(value).__name__}): expected {wanted}.", path)


def _integer(value: Any, path: str, fmt: str | None) -> SchemaProblem | None:
    if isinstance(value, bool):
        return _invalid(path, "an integer", value)
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        return _invalid(path, "an integer", value)
    if fmt == "int32" and not _INT32[0] <= number <= _INT32[1]:
        return SchemaProblem(f"Invalid value at '{path}': {number} is out of range for int32.", path)
    return None


def _string(spec: dict[str, Any], value: Any, path: str) -> SchemaProblem | None:
    if not isinstance(value, str):
        return _invalid(path, "a string", value)
    enum = spec.get("enum")
    if enum is not None and value.upper() not in enum:
        return SchemaProblem(f"Invalid value at '{path}': \"{value}\" is not one of {enum}.", path)
    fmt = spec.get("format")
    if fmt == "google-duration" and not _DURATION.fullmatch(value):
        return SchemaProblem(f"Invalid value at '{path}': \"{value}\" is not a google-duration "
                             "(seconds with an 's' suffix, such as \"3600s\" or \"3.5s\").", path)
    if fmt == "google-datetime" and not _DATETIME.fullmatch(value):
        return SchemaProblem(f"Invalid value at '{path}': \"{value}\" is not an RFC 3339 timestamp.", path)
    return None
