"""PostgreSQL access: a connection pool, ordered SQL migrations, and the embedded default server."""

from dispatcher.db.pool import connect, get_pool
from dispatcher.db.migrate import migrate

__all__ = ["connect", "get_pool", "migrate"]
