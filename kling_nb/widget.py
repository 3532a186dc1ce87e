"""Live ipywidgets views of generations, drawn from render.Snapshot values.

A view is one HTML widget (the card: prompt, parameters, status badge, progress bar,
elapsed time, task id, error) plus an Output widget where the video lands. Few widget
models keep the kernel's comm traffic and a headless run's saved widget state small.

Updates arrive from worker threads. Trait changes go over the comm, which is safe from any
thread (FIELD-NOTES 1); only changed values are sent; a view is refreshed at most ten times
a second, a final state at once. One ticker thread per process advances elapsed times.
"""

from __future__ import annotations

import threading
import time
import weakref

import ipywidgets as w

from . import render
from .tracker import Generation

MIN_REFRESH_S = 0.1


class GenerationView:
    def __init__(self, gen: Generation, *, compact: bool = False):
        self.gen = gen
        self.compact = compact
        self.card = w.HTML()
        self.video = w.Output()
        self.box = w.VBox([self.card, self.video], layout=w.Layout(border="1px solid #d0d7de", padding="4px"))
        self._last_sent = 0.0
        self._lock = threading.Lock()
        self._shown_video = False
        self.refresh(force=True)
        gen.add_listener(self._changed)
        _TICKER.add(self)

    def _changed(self, gen: Generation) -> None:
        self.refresh(force=gen.done)

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_sent < MIN_REFRESH_S:
                return
            self._last_sent = now
            s = render.Snapshot.of(self.gen)
            self.card.value = render.live_card_html(s, compact=self.compact)
            if s.video_src and s.status == "completed" and not self._shown_video:
                # A text/html output (not a widget) inside the Output widget: JupyterLab
                # resolves its relative src against the notebook, as for cell outputs.
                from IPython.display import HTML

                self._shown_video = True
                self.video.append_display_data(HTML(render.video_html(s, width=320, caption=False)))

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = render.status_line(render.Snapshot.of(self.gen))
        return bundle


class GridView:
    """One tile per variant, labelled with what differs; each fills in as its video lands."""

    def __init__(self, gens: list[Generation], *, title: str = ""):
        self.tiles = [GenerationView(g, compact=True) for g in gens]
        cols = render.grid_columns(len(gens))
        heading = render.html.escape(title)
        note = render.SIMULATED_NOTE if any(g.simulated for g in gens) else ""
        self.heading = w.HTML(
            f"<b>{heading}</b>" + (f'<div style="color:#9a6700;font-size:12px">{render.html.escape(note)}</div>'
                                   if note else "")
        )
        grid = w.GridBox(
            [t.box for t in self.tiles],
            layout=w.Layout(grid_template_columns=f"repeat({cols}, minmax(0, 1fr))", grid_gap="8px"),
        )
        self.box = w.VBox([self.heading, grid])

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = render.grid_text([render.Snapshot.of(t.gen) for t in self.tiles])
        return bundle


class _Ticker:
    """Advances the elapsed time of unfinished views once a second, from one thread."""

    def __init__(self):
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
