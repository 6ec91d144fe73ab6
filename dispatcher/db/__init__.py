"""PostgreSQL access: a connection pool, ordered SQL migrations, and the embedded default server."""

from dispatcher.db.migrate import migrate
from dispatcher.db.pool import connect, get_pool

__all__ = ["connect", "get_pool", "migrate"]
