"""The connection type every module of the engine passes around, spelled once."""

from __future__ import annotations

from typing import Any

import psycopg

#: A psycopg connection with any row factory (tuples by default; a query may pick ``class_row``).
Conn = psycopg.Connection[Any]
