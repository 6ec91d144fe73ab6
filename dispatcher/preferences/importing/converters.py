"""Converters from the text of one field to its COPY text, and the encoder of one whole row.

Each converter raises ``ValueError`` with a problem that names the field, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import h3.api.basic_int as h3_int

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.preferences import validation
from dispatcher.preferences.importing.report import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

#: Converts one optional cell to its COPY text ("\\N" for NULL) or raises ValueError naming the column.
Converter = Callable[[str], str]
#: Distinct values remembered per cached column (locales and time zones repeat across millions of rows).
_CACHE_LIMIT = 10_000
_TOKENS = re.compile(r"[A-Za-z0-9_:.~+/=-]{1,4096}(?:;[A-Za-z0-9_:.~+/=-]{1,4096})*")


def _bool_converter(name: str) -> Converter:
    known = {"": "\\N"}
    for spelling in ("true", "t", "1", "yes", "y", "on", "false", "f", "0", "no", "n", "off"):
        value = "t" if validation.parse_bool(spelling) else "f"
        for variant in (spelling, spelling.upper(), spelling.capitalize()):
            known[variant] = value

    def convert(text: str) -> str:
        value = known.get(text)
        if value is not None:
            return value
        parsed = validation.parse_bool(text)
        if parsed is None:
            if not text.strip():
                return "\\N"
            raise ValueError(f"{name} must be true or false")
        return "t" if parsed else "f"

    return convert


def _cached_text_converter(problem: Callable[[str], str | None]) -> Converter:
    good: set[str] = set()

    def convert(text: str) -> str:
        if text in good:
            return text
        stripped = text.strip()
        if not stripped:
            return "\\N"
        bad = problem(stripped)
        if bad:
            raise ValueError(bad)
        if stripped == text and len(good) < _CACHE_LIMIT:
            good.add(text)
        return stripped

    return convert


def _email(text: str) -> str:
    # Present but empty means "no address": '' in staging, NULL in the index.
    stripped = text.strip()
    if stripped and validation.email_problem(stripped):
        raise ValueError("email is not a valid address")
    return stripped


def _tokens(text: str) -> str:
    if _TOKENS.fullmatch(text):  # the common case: clean tokens, no spaces, no empty entries
        return text
    tokens = [t.strip() for t in text.split(";") if t.strip()]
    if not tokens:
        return "\\N"
    for token in tokens:
        bad = validation.token_problem(token)
        if bad:
            raise ValueError(bad)
    return ";".join(tokens)


def plain_number(text: str) -> bool:
    """Whether ``int()``/``float()`` may read ``text``: Python also reads ``4_0`` as 40 and other
    scripts' digits, which no file means; only ASCII without underscores is taken."""
    return text.isascii() and "_" not in text


def _version(text: str) -> str:
    stripped = text.strip()
    if not stripped:
        return "\\N"
    try:
        if not plain_number(stripped):
            raise ValueError
        version = int(stripped)
    except ValueError:
        raise ValueError("version must be an integer") from None
    bad = validation.version_problem(version)
    if bad:
        raise ValueError(bad)
    return str(version)


def _converter(name: str) -> Converter:
    if name == "email":
        return _email
    if name == "locale":
        return _cached_text_converter(validation.locale_problem)
    if name == "time_zone":
        return _cached_text_converter(validation.time_zone_problem)
    if name == "push_tokens":
        return _tokens
    if name == "version":
        return _version
    return _bool_converter(name)


#: Converts a whole column of a chunk, or raises ValueError (the chunk is then redone row by row).
ColumnConverter = Callable[[Sequence[str]], Sequence[str]]
#: Addresses plainly valid (or empty), needing no stripping: most of any real file.
_PLAIN_EMAIL = re.compile(r"(?:[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)?")


def _column_converter(name: str, convert: Converter) -> ColumnConverter:
    if name == "email":
        def emails(column: Sequence[str]) -> Sequence[str]:
            if all(map(_PLAIN_EMAIL.fullmatch, column)) and max(map(len, column)) <= validation.MAX_EMAIL_LENGTH:
                return column
            return list(map(_email, column))
        return emails
    if name == "push_tokens":
        def tokens(column: Sequence[str]) -> Sequence[str]:
            return column if all(map(_TOKENS.fullmatch, column)) else list(map(_tokens, column))
        return tokens
    if name == "version":
        return lambda column: list(map(_version, column))

    def few_distinct(column: Sequence[str]) -> Sequence[str]:
        # Booleans, locales and time zones: each distinct spelling is checked once.
        table = {value: convert(value) for value in set(column)}
        return list(map(table.__getitem__, column))
    return few_distinct


#: What COPY cannot carry in a text column: NUL, and surrogates (undecodable bytes of a file that is not
#: UTF-8, or lone surrogates escaped in JSON). Validation keeps them out; this is the last line of defence.
NOT_COPYABLE = re.compile("[\x00\ud800-\udfff]")


def _not_copyable_problem(cells: Sequence[str | None], names: Sequence[str]) -> str:
    for name, text in zip(names, cells, strict=False):
        if text is not None and NOT_COPYABLE.search(text):
            if "\x00" in text:
                return f"{name} contains a NUL byte"
            return f"{name} is not valid UTF-8 text"
    return "line is not valid UTF-8 text"


class RowEncoder:
    """Turns the cells of one row into one COPY line (tab-separated text), or raises ValueError.

    Validation guarantees no value contains a tab, newline or backslash, so no escaping is needed.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        index = {name: i for i, name in enumerate(columns)}
        self.names = tuple(columns)
        self.width = len(columns)
        self.i_id, self.i_lat, self.i_lng = index["id"], index["lat"], index["lng"]
        # (cell index or None when the column is absent, converter), in staging-table order.
        self.optional = [(index.get(name), _converter(name)) for name in OPTIONAL_COLUMNS]
        self.column_converters = [(i, _column_converter(name, convert))
                                  for name, (i, convert) in zip(OPTIONAL_COLUMNS, self.optional, strict=True)]
        self.any_optional = any(i is not None for i, _ in self.optional)
        self.latlng_to_cell = h3_int.latlng_to_cell
        #: Ids of the rows encoded, for the duplicate check.
        self.ids: list[int] = []

    def encode(self, line: int, cells: Sequence[str | None]) -> str:
        """One COPY line, or ValueError naming the first field that is wrong."""
        row = self._encode(line, cells)
        if NOT_COPYABLE.search(row):
            raise ValueError(_not_copyable_problem(cells, self.names))
        return row

    def _encode(self, line: int, cells: Sequence[str | None]) -> str:
        if len(cells) != self.width:
            raise ValueError(f"expected {self.width} columns, found {len(cells)}")
        id_text, lat_text, lng_text = cells[self.i_id], cells[self.i_lat], cells[self.i_lng]
        try:
            if id_text is None or not plain_number(id_text):
                raise ValueError
            resident_id = int(id_text)
        except ValueError:
            raise ValueError("id must be an integer") from None
        if not 0 < resident_id <= validation.MAX_RESIDENT_ID:
            raise ValueError("id must be a positive 64-bit integer")
        try:
            if lat_text is None or lng_text is None or not (plain_number(lat_text) and plain_number(lng_text)):
                raise ValueError
            lat, lng = float(lat_text), float(lng_text)
        except ValueError:
            raise ValueError("lat and lng must be numbers") from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):  # also false for NaN
            raise ValueError(validation.location_problem(lat, lng) or "location is out of range")
        self.ids.append(resident_id)
        cell = self.latlng_to_cell(lat, lng, RESIDENT_CELL_RESOLUTION)
        head = f"{line}\t{resident_id}\t{lat!r}\t{lng!r}\t{cell}\t"
        if not self.any_optional:
            return head + "\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n"
        return head + "\t".join([
            "\\N" if i is None or (text := cells[i]) is None else convert(text)
            for i, convert in self.optional
        ]) + "\n"


def jsonl_cells(obj: Any) -> list[str | None]:
    """A JSON Lines object as cells in the order ``REQUIRED_COLUMNS + OPTIONAL_COLUMNS``.

    ``None`` marks a field that is absent (keep what the index has); ``"email": null`` clears the address.
    """
    if not isinstance(obj, dict):
        raise ValueError("line is not a JSON object")
    unknown = set(obj) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS)
    if unknown:
        raise ValueError("unknown fields: " + ", ".join(sorted(unknown)))
    cells: list[str | None] = []
    for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        value = obj.get(name)
        if value is None:
            if name in REQUIRED_COLUMNS:
                raise ValueError(f"{name} is missing")
            cells.append("" if name == "email" and name in obj else None)
        elif name in ("id", "version") and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer")
        elif name in ("lat", "lng") and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("lat and lng must be numbers")
        elif isinstance(value, bool):
            cells.append("true" if value else "false")
        elif isinstance(value, list):
            if name != "push_tokens" or not all(isinstance(t, str) for t in value):
                raise ValueError(f"{name} must not be a list")
            cells.append(";".join(value))
        elif isinstance(value, dict):
            raise ValueError(f"{name} must not be an object")
        else:
            cells.append(str(value))
    return cells

