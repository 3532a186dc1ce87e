"""Live ipywidgets views of generations, drawn from render.Snapshot values.

A view is a single Output widget whose one output is a text/html card (prompt, parameters,
status badge, progress bar, elapsed time, task id, error) and, once done, the video. An
Output renders its outputs like cell outputs, so the video's src can stay relative to the
notebook (an HTML widget's cannot: docs/design-notes.md section 2). One widget model per view keeps the
comm traffic and a headless run's saved widget state small, and a view that has been
replaced by the cell's final output is emptied.

Updates arrive from worker threads. Trait changes go over the comm, which is safe from any
thread (docs/design-notes.md section 1); a view is refreshed at most ten times a second, a final state at
once. One ticker thread per process advances the elapsed times.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref

import ipywidgets as w

from ..engine.generation import Generation, Snapshot
from . import render
from .frontends import Embedding

MIN_REFRESH_S = 0.1


class GenerationView:
    def __init__(
        self, gen: Generation, *, compact: bool = False, label: dict | None = None, embedding: Embedding | None = None
    ):
        self.gen = gen
        self.embedding = embedding or Embedding.here()
        self.compact = compact
        self.label = label  # this view's tile label (compare), else the generation's own
        self.out = w.Output(layout=_shared_layout())
        self._last_sent = 0.0
        self._last_version = -1
        self._lock = threading.Lock()
        self.refresh(force=True)
        gen.add_listener(self._changed)
        _TICKER.add(self)

    @property
    def card_html(self) -> str:
        return self.out.outputs[0]["data"]["text/html"] if self.out.outputs else ""

    def _changed(self, snap: Snapshot) -> None:
        self.refresh(force=snap.done)

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_sent < MIN_REFRESH_S:
                return
            s = self.gen.snapshot()
            if s.version < self._last_version:
                return  # a listener on another thread got here first with a newer state
            self._last_sent, self._last_version = now, s.version
            if self.label is not None:
                s = dataclasses.replace(s, label=self.label)
            html = render.live_card_html(s, compact=self.compact)
            media = self.embedding.media(s)
            if media is not None:
                html += render.video_html(s, media, width=320 if self.compact else 480, caption=False)
            self.out.outputs = (
                {
                    "output_type": "display_data",
                    "data": {"text/html": html, "text/plain": render.status_line(s)},
                    "metadata": {},
                },
            )

    def retire(self) -> None:
        """The cell's final output has replaced this view: keep nothing in it."""
        with self._lock:
            self.out.outputs = ()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.out._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = render.status_line(self.gen.snapshot())
        return bundle


class GridView:
    """One tile per variant, labelled with what differs; each fills in as its video lands."""

    def __init__(
        self,
        gens: list[Generation],
        *,
        title: str = "",
        labels: list[dict] | None = None,
        embedding: Embedding | None = None,
    ):
        self.tiles = [
            GenerationView(g, compact=True, label=labels[i] if labels else None, embedding=embedding)
            for i, g in enumerate(gens)
        ]
        cols = render.grid_columns(len(gens))
        note = render.SIMULATED_NOTE if any(g.simulated for g in gens) else ""
        heading = f"<b>{render.html.escape(title)}</b>" + (
            f'<div class="kling-sim" style="{render.NOTE_STYLE}">{render.html.escape(note)}</div>' if note else ""
        )
        # The title and note above the grid, not in its first cell: tiles keep their grid.
        grid = w.GridBox(
            [t.out for t in self.tiles],
            layout=w.Layout(grid_template_columns=f"repeat({cols}, minmax(0, 1fr))", grid_gap="8px"),
        )
        self.box = w.VBox([w.HTML(heading), grid])

    def retire(self) -> None:
        for t in self.tiles:
            t.retire()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = render.grid_text([t.gen.snapshot() for t in self.tiles])
        return bundle


_LAYOUT: list = []


def _shared_layout() -> w.Layout:
    """One Layout model for every view (each widget would otherwise bring its own)."""
    if not _LAYOUT or _LAYOUT[0].comm is None:  # none yet, or closed (Widget.close_all())
        _LAYOUT[:] = [w.Layout()]
    return _LAYOUT[0]


class _Ticker:
    """Advances the elapsed time of unfinished views once a second, from one thread."""

    def __init__(self) -> None:
        self._views: weakref.WeakSet[GenerationView] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, view: GenerationView) -> None:
        with self._lock:
            self._views.add(view)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kling-ticker", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                views = [v for v in self._views if not v.gen.done]
            for v in views:
                try:
                    v.refresh()
                except Exception:  # a closed widget: forget it
                    with self._lock:
                        self._views.discard(v)


_TICKER = _Ticker()
