"""A random secret kept in a file under ``home``, for keys a developer's machine need not configure.

Created once with mode 0600; two processes racing to create it end up using the same file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def secret_in_file(path: Path) -> bytes:
    """The secret stored at ``path``, generated there first if the file does not exist."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    key = secrets.token_urlsafe(48).encode()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key
