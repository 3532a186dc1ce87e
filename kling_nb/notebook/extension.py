"""`%load_ext kling_nb`: registering the magics, and finding the kernel's one runtime."""

from __future__ import annotations

from IPython import get_ipython

from ..engine.session import Runtime
from .display import register_formatters
from .magics import KlingMagics

_process_runtime: Runtime | None = None


def load(ipython) -> None:
    if magics_of(ipython) is not None:  # loaded already: keep the one runtime
        return
    magics = KlingMagics(shell=ipython, parent=ipython)
    ipython.register_magics(magics)
    ipython.configurables.append(magics)  # so %config KlingMagics.x = ... finds it
    register_formatters(ipython)


def unload(ipython) -> None:
    magics = magics_of(ipython)
    if magics is None:
        return
    if magics._runtime is not None:
        magics._runtime.close()
    ipython.configurables.remove(magics)


def magics_of(ipython=None) -> KlingMagics | None:
    ipython = ipython if ipython is not None else get_ipython()
    if ipython is None:
        return None
    return next((c for c in ipython.configurables if isinstance(c, KlingMagics)), None)


def current_runtime() -> Runtime:
    """The runtime of the loaded extension, else one for this process (scripts)."""
    global _process_runtime
    magics = magics_of()
    if magics is not None:
        return magics.runtime
    if _process_runtime is None:
        _process_runtime = Runtime()
    return _process_runtime
