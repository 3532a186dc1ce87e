"""Files kling_nb makes beside the videos (posters, frames, films, exported pages): written
to a private temporary file in the destination folder, then renamed into place, so a reader
never sees half a file and nothing is written through a link someone planted. The result
gets the permissions an ordinary new file would (0o666 less the umask), not mkstemp's 0o600,
so a web server or a classmate can read what is shared."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:  # read without changing it under other threads
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_file(dest: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """`with atomic_file(path) as f: f.write(...)`: all of it lands at `path`, or nothing does.
    Text modes write UTF-8."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".kling-", suffix=dest.suffix)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """For writers that want a path (PyAV): a temporary path beside `dest`, renamed on success."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".kling-", suffix=dest.suffix)
    os.close(fd)
    try:
        os.chmod(tmp, FILE_MODE)
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
