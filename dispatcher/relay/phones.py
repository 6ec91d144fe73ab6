"""Real phone numbers: the only place they are turned into rows and back.

A number is stored twice, never in clear: Fernet-encrypted (to send to it) and as a keyed hash (HMAC-SHA256,
to find its row when a webhook names it). Everything else in the relay refers to a phone by its row id.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from dispatcher.config import Settings, get_settings
from dispatcher.db.types import Conn
from dispatcher.relay.errors import InvalidPhoneNumber
from dispatcher.relay.keys import lookup_key, number_fernet

_E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def normalize_number(raw: object) -> str:
    """``raw`` as E.164, or :class:`InvalidPhoneNumber` (the message never repeats the input)."""
    if not isinstance(raw, str):
        raise InvalidPhoneNumber("a phone number must be a string in E.164 form")
    number = raw.strip()
    if not _E164.fullmatch(number):
        raise InvalidPhoneNumber("a phone number must be in E.164 form: + and 8 to 15 digits")
    return number


def number_hash(number: str, settings: Settings | None = None) -> bytes:
    return hmac.new(lookup_key(settings or get_settings()), number.encode(), hashlib.sha256).digest()


def encrypt_number(number: str, settings: Settings | None = None) -> bytes:
    return number_fernet(settings or get_settings()).encrypt(number.encode())


def decrypt_number(token: bytes, settings: Settings | None = None) -> str:
    return number_fernet(settings or get_settings()).decrypt(bytes(token)).decode()


def find_phone(conn: Conn, number: str) -> int | None:
    """The row id of a (normalized) number, if the relay knows it."""
    row = conn.execute("SELECT id FROM relay_phones WHERE number_hmac = %s", (number_hash(number),)).fetchone()
    return int(row[0]) if row else None


def ensure_phone(conn: Conn, number: str) -> int:
    """The row id of a number, creating its row on first sight (safe under concurrency)."""
    number = normalize_number(number)
    digest = number_hash(number)
    row = conn.execute(
        "INSERT INTO relay_phones (number_hmac, number_encrypted) VALUES (%s, %s)"
        " ON CONFLICT (number_hmac) DO NOTHING RETURNING id",
        (digest, encrypt_number(number)),
    ).fetchone()
    if row is None:
        row = conn.execute("SELECT id FROM relay_phones WHERE number_hmac = %s", (digest,)).fetchone()
    assert row is not None
    return int(row[0])


def phone_number(conn: Conn, phone_id: int) -> str:
    row = conn.execute("SELECT number_encrypted FROM relay_phones WHERE id = %s", (phone_id,)).fetchone()
    if row is None:
        raise InvalidPhoneNumber(f"no phone with id {phone_id}")
    return decrypt_number(row[0])


def rotate_number_keys(conn: Conn, batch: int = 1000) -> int:
    """Re-encrypt every stored number with the newest key (after a new key was put first); returns the count."""
    fernet = number_fernet(get_settings())
    done = 0
    last = 0
    while True:
        with conn.transaction():
            rows = conn.execute(
                "SELECT id, number_encrypted FROM relay_phones WHERE id > %s ORDER BY id LIMIT %s FOR UPDATE",
                (last, batch)).fetchall()
            if not rows:
                return done
            for phone_id, token in rows:
                conn.execute("UPDATE relay_phones SET number_encrypted = %s WHERE id = %s",
                             (fernet.rotate(bytes(token)), phone_id))
            last = int(rows[-1][0])
            done += len(rows)
