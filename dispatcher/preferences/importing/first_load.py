"""First load into an empty index: secondary indexes, foreign and primary keys rebuilt once at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from psycopg import sql

from dispatcher.db.types import Conn
from dispatcher.preferences.importing import statements

#: Tables a first load fills; their secondary indexes and foreign keys are built once, at the end.
_LOADED_TABLES = ("residents", "resident_settings", "device_tokens")


@contextlib.contextmanager
def built_at_the_end_if_first_load(conn: Conn) -> Iterator[bool]:
    """On a first load into an empty index, build secondary indexes and foreign keys once at the end.

    Building the cell index after a million inserts, and checking every foreign key with one join, is
    several times cheaper (in time and WAL) than maintaining them row by row. The tables are empty, so
    the exclusive locks this takes block nobody's targeting. Definitions are read from the catalog, so
    a migration may change them freely; everything is back before the transaction commits. Primary
    keys go too (unless a foreign key of another table needs one) and come back first, so the first
    load inserts without conflict checks. Yields whether this is such a first load.
    """
    if conn.execute(statements.INDEX_IS_EMPTY).fetchone() != (True,):
        yield False
        return
    conn.execute(statements.LOCK_LOADED_TABLES)
    if conn.execute(statements.INDEX_IS_EMPTY).fetchone() != (True,):  # someone wrote before we held the lock
        yield False
        return
    tables = list(_LOADED_TABLES)
    indexes = [(str(schema), str(name), str(ddl))
               for schema, name, ddl in conn.execute(statements.SECONDARY_INDEXES, (tables,))]
    foreign_keys = [(sql.Identifier(str(schema), str(table)), sql.Identifier(str(name)), str(ddl))
                    for schema, table, name, ddl in conn.execute(statements.FOREIGN_KEYS, (tables,))]
    for table, constraint, _ in foreign_keys:
        conn.execute(sql.SQL(statements.DROP_CONSTRAINT).format(table, constraint))
    for schema, name, _ in indexes:
        conn.execute(sql.SQL(statements.DROP_INDEX).format(sql.Identifier(schema, name)))
    primary_keys = [(sql.Identifier(str(schema), str(table)), sql.Identifier(str(name)), str(ddl))
                    for schema, table, name, ddl in conn.execute(statements.PRIMARY_KEYS, (tables,))]
    for table, constraint, _ in primary_keys:
        conn.execute(sql.SQL(statements.DROP_CONSTRAINT).format(table, constraint))
    yield True
    conn.execute(statements.SET_MAINTENANCE_WORK_MEM)
    for table, constraint, ddl in primary_keys:
        definition = sql.SQL(ddl)  # the catalog's own text
        conn.execute(sql.SQL(statements.ADD_CONSTRAINT).format(table, constraint, definition))
    for _, _, ddl in indexes:
        conn.execute(ddl.encode())
    for table, constraint, ddl in foreign_keys:
        definition = sql.SQL(ddl)  # the catalog's own text
        conn.execute(sql.SQL(statements.ADD_CONSTRAINT).format(table, constraint, definition))

