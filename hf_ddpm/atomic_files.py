"""Files that appear whole or not at all: written under a hidden temporary name beside their place, then renamed."""

from __future__ import annotations

import os


def atomic_write(path: str, write) -> None:
    """Call ``write(handle)`` on a hidden temporary file beside ``path``, flush it to disk, then rename it to ``path``:
    readers see either no file or the whole file."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
