"""kling_nb: the `%%kling` cell magic for kling-video-o1 video generation in Jupyter.

    %load_ext kling_nb

    %%kling --name skyline
    mode: pro
    duration: 5
    ---
    Golden hour city skyline, cinematic lens quality

With no TOAPIS_API_KEY set, everything runs on the embedded simulator.
"""

from __future__ import annotations

import logging

from .cell.spec import Request, parse, parse_batch
from .engine.generation import Generation, Generations, State
from .errors import (
    APIError,
    ConfigError,
    DeadlineError,
    DownloadError,
    ExpiredError,
    GenerationFailed,
    KlingError,
    SpecError,
    SubmitUnknownError,
    TransportError,
)

__all__ = [
    "APIError",
    "ConfigError",
    "DeadlineError",
    "DownloadError",
    "ExpiredError",
    "Generation",
    "Generations",
    "GenerationFailed",
    "KlingError",
    "Request",
    "SpecError",
    "State",
    "SubmitUnknownError",
    "TransportError",
    "compare",
    "generate",
    "load_ipython_extension",
    "login",
    "parse",
    "parse_batch",
    "stitch",
    "unload_ipython_extension",
]
__version__ = "0.1.0"

# A library logs only where the user asks it to: errors reach people on the generation itself,
# and a background thread's stray stderr would land in whichever cell happens to be running.
logging.getLogger("kling_nb").addHandler(logging.NullHandler())


def load_ipython_extension(ipython) -> None:
    from .notebook.extension import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .notebook.extension import unload

    unload(ipython)


def generate(prompt: str, *, name: str | None = None, force: bool = False, show: bool = True, **fields) -> Generation:
    """Start one generation from Python (e.g. in a loop); returns at once.

    Fields are the cell header's: mode, duration, aspect_ratio, audio, images, videos,
    elements, metadata, video_list... Validation is the same as for a cell.
    """
    from .cell.spec import from_fields
    from .notebook.display import CellOutput
    from .notebook.extension import current_runtime

    request = from_fields(prompt, fields)
    runtime = current_runtime()
    gen = runtime.run(request, name=name, force=force)
    if show:
        output = CellOutput([gen])
        runtime.outputs.append(output)
        output.show()
    return gen


def login(key: str) -> None:
    """Use this key for new generations (like `%kling login`, for a key read from a file or a
    secret store). Running generations go on with theirs; the key is never printed."""
    from .notebook.extension import current_runtime

    current_runtime().set_key(key)


def stitch(names: list[str], *, name: str, show: bool = True) -> Generation:
    """Cut named generations, in order, into one film; returns at once (the film is made when
    they are all completed). Remuxed when the clips match, re-encoded to the first's size if not."""
    from .notebook.display import CellOutput
    from .notebook.extension import current_runtime

    runtime = current_runtime()
    film = runtime.stitch(list(names), name=name)
    if show:
        output = CellOutput([film])
        runtime.outputs.append(output)
        output.show()
    return film


def compare(names_or_generations, *, title: str = "compare") -> Generations:
    """Show named generations (str) or Generation objects side by side in one grid."""
    from .notebook.display import CellOutput
    from .notebook.extension import current_runtime
    from .notebook.magics import show_compare

    items = list(names_or_generations)
    runtime = current_runtime()
    if all(isinstance(x, str) for x in items):
        return show_compare(runtime, items)
    gens = Generations()
    for x in items:
        gens.extend(runtime.by_name(x) if isinstance(x, str) else (x if isinstance(x, list) else [x]))
    output = CellOutput(gens, grid=True, title=title)
    runtime.outputs.append(output)
    output.show()
    return gens
