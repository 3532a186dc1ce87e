"""The one funnel between kling_nb and IPython's display system.

A cell's output has one display id. It first shows the live widget; when every generation
of the cell is done it is replaced, through that display id, by a plain text/html result (a
relative `<video>`, a grid, or the service's error as text), which is what the saved
notebook keeps (docs/design-notes.md section 2).

Who receives that replacement depends on the frontend (docs/design-notes.md section 1):
- JupyterLab routes output by the message's parent header and keeps listening to a cell
  after it ran, so the worker thread sends the update under the header of the cell that
  started the generation.
- Headless runs (nbclient, papermill) keep only messages of the cell that is executing;
  `%kling wait` and `--wait` therefore send the update again from inside their own cell, and
  nbclient applies it to the earlier cell that owns the display id.
- Terminal IPython has no widgets: status lines are printed instead.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from typing import TYPE_CHECKING, Any

from ..engine.generation import Generation, Generations, Snapshot
from . import render
from .frontends import Embedding, contact_sheet, frontend

if TYPE_CHECKING:  # show() imports them when it needs a live view
    from .widget import GenerationView, GridView


def _kernel_shell():
    """The running IPython shell if it is a kernel (has a frontend that can show widgets)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def publish(bundle: dict[str, Any], *, display_id: str, update: bool, parent: dict | None = None) -> None:
    """Send a mime bundle, tagged with `display_id`; `parent` routes it to the cell that
    started it when called from a worker thread. Everything kling_nb shows passes here."""
    from IPython.display import publish_display_data

    shell = _kernel_shell()
    pub = getattr(shell, "display_pub", None) if shell else None
    token = None
    if parent is not None and pub is not None and hasattr(pub, "set_thread_parent"):  # ipykernel >= 6.29
        token = pub.set_thread_parent(parent)
    try:
        publish_display_data(data=bundle, transient={"display_id": display_id}, update=update)
    finally:
        if token is not None:
            assert pub is not None, "the token came from pub.set_thread_parent"
            pub.reset_thread_parent(token)


def current_parent() -> dict | None:
    shell = _kernel_shell()
    pub = getattr(shell, "display_pub", None) if shell else None
    header = getattr(pub, "parent_header", None)
    return dict(header) if header else None


class CellOutput:
    """The output of one `%%kling` cell (one generation or a grid of them)."""

    def __init__(
        self,
        gens: list[Generation],
        *,
        grid: bool = False,
        title: str = "",
        labels: list[dict] | None = None,
        embedding: Embedding | None = None,
    ):
        self.gens = gens
        self.embedding = embedding or Embedding.here()
        self.grid = grid
        self.title = title
        self.labels = labels  # tile labels for this output only (compare), else each gen's own
        self.display_id = f"kling-{uuid.uuid4().hex}"
        self.parent: dict | None = None  # the header of the cell that showed the live view
        self.view: GridView | GenerationView | None = None  # the live view, once shown
        self._final_sent = threading.Event()
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return all(g.snapshot().done for g in self.gens)

    def snapshots(self) -> list[Snapshot]:
        snaps = [g.snapshot() for g in self.gens]
        if self.labels is not None:
            snaps = [dataclasses.replace(s, label=label) for s, label in zip(snaps, self.labels, strict=True)]
        return snaps

    def final_bundle(self) -> dict[str, str]:
        items = [(s, self.embedding.media(s)) for s in self.snapshots()]
        if self.grid:
            still = contact_sheet([m.still if m else None for _, m in items], render.grid_columns(len(items)))
            return render.grid_bundle(items, title=self.title, still=still)
        return render.final_bundle(*items[0])

    def show(self) -> None:
        """Display the live view now and arrange for the final result to replace it."""
        if _kernel_shell() is None:
            for s in self.snapshots():
                print(render.status_line(s))
            if self.done:  # already final: that was its last line too
                self._final_sent.set()
                return
        elif self.done:
            publish(self.final_bundle(), display_id=self.display_id, update=False)
            self._final_sent.set()
            return
        else:
            from .widget import GenerationView, GridView

            self.parent = current_parent()
            self.view = (
                GridView(self.gens, title=self.title, labels=self.labels, embedding=self.embedding)
                if self.grid
                else GenerationView(self.gens[0], embedding=self.embedding)
            )
            publish(self.view._repr_mimebundle_(), display_id=self.display_id, update=False)
        for g in self.gens:
            g.add_listener(self._changed)
        self._changed(None)

    def _changed(self, _snap: Snapshot | None) -> None:
        if not self.done:
            return
        with self._lock:
            if self._final_sent.is_set():
                return
            self._final_sent.set()
        if _kernel_shell() is None:
            for s in self.snapshots():
                print(render.status_line(s))
        else:
            publish(self.final_bundle(), display_id=self.display_id, update=True, parent=self.parent)

    def finalize_here(self) -> None:
        """Send the final result again from the cell that is executing now: headless runs
        keep only its messages. The live view it replaces is emptied, so a runner that saves
        widget state (nbclient does) does not keep a second copy of everything; except under
        Voilà, whose page showed each cell once, as it ran: there the widget is the result."""
        if self.done and _kernel_shell() is not None:
            publish(self.final_bundle(), display_id=self.display_id, update=True)
            if self.view is not None and frontend() != "voila":
                self.view.retire()


def _generation_bundle(gen: Generation, include=None, exclude=None) -> dict[str, str]:
    return CellOutput([gen]).final_bundle()


def _generations_bundle(gens: Generations, include=None, exclude=None) -> dict[str, str]:
    return CellOutput(list(gens), grid=True).final_bundle()


def register_formatters(shell) -> None:
    """Show a Generation (or a sweep's Generations) as its card or video when it is the value
    of a cell. Registered with IPython's formatter so the engine never imports the notebook."""
    formatter = shell.display_formatter.mimebundle_formatter
    formatter.for_type(Generation, _generation_bundle)
    formatter.for_type(Generations, _generations_bundle)
