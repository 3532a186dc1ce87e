"""Read-only folders for tests. The suite runs as root, which ignores `chmod a-w`, so a folder is
made read-only with `chattr +i` (Debian's e2fsprogs) and always made writable again."""

from __future__ import annotations

import contextlib
import subprocess


@contextlib.contextmanager
def immutable(*paths):
    """Make `paths` immutable for the block (as a shared, read-only teaching folder is)."""
    done = []
    try:
        for p in paths:
            subprocess.run(["chattr", "+i", str(p)], check=True)
            done.append(p)
        yield
    finally:
        for p in reversed(done):
            subprocess.run(["chattr", "-i", str(p)], check=True)
