"""Files written whole or not at all.  Imports nothing of ptqc."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """A temporary file beside ``path``, opened with ``mode`` (and ``open``'s ``kwargs``): on a
    clean exit it replaces ``path`` by a rename, on an error it is removed, so nobody ever
    sees a half-written file and a failed run leaves the old one (or none) in place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
