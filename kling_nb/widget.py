"""Live ipywidgets views of generations, drawn from render.Snapshot values.

Updates arrive from worker threads. Trait changes are sent over the comm, which is safe from
any thread (FIELD-NOTES 1), and only values that changed are sent. A view is refreshed at most
ten times a second, and a final state is always sent at once. One ticker thread per process
advances the elapsed-time labels once a second.
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
    """Name, prompt, parameters, status badge, progress bar, elapsed time and task id; on
    failure the service's code and message."""

    def __init__(self, gen: Generation, *, compact: bool = False):
        self.gen = gen
        snap = render.Snapshot.of(gen)
        self.header = w.HTML(render.header_html(snap) if not compact else "")
        self.caption = w.HTML(f"<b>{render.label_text(snap.label)}</b>" if compact and snap.label else "")
        self.badge = w.HTML()
        self.bar = w.IntProgress(min=0, max=100, layout=w.Layout(width="160px" if compact else "240px"))
        self.elapsed = w.Label()
        self.task = w.Label()
        self.error = w.HTML()
        self.video = w.Output()
        row = w.HBox([self.badge, self.bar, self.elapsed, self.task])
        self.box = w.VBox(
            [self.caption if compact else self.header, row, self.error, self.video],
            layout=w.Layout(border="1px solid #d0d7de", padding="6px"),
        )
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
            with self.box.hold_sync():
                self.badge.value = render.badge_html(s.status)
                self.bar.value = s.progress
                self.bar.bar_style = {"completed": "success", "failed": "danger"}.get(s.status, "")
                self.elapsed.value = render.elapsed_text(s.elapsed_s)
                self.task.value = f"task {s.task_id}" if s.task_id else ""
                self.error.value = render.failure_html(s) if s.error else ""
            if s.video_src and s.status == "completed" and not self._shown_video:
                # A text/html output (not a widget) inside the Output widget: JupyterLab
                # resolves its relative src against the notebook, as for cell outputs.
                from IPython.display import HTML

                self._shown_video = True
                self.video.append_display_data(HTML(render.video_html(s, width=320)))

    def resend(self) -> None:
        """Re-send every trait from the current cell (headless runs keep only messages of
        the cell that is executing: FIELD-NOTES 1)."""
        self.refresh(force=True)
        for child in (self.badge, self.bar, self.elapsed, self.task, self.error, self.box):
            child.send_state()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = render.status_line(render.Snapshot.of(self.gen))
        return bundle


class GridView:
    """One tile per variant, labelled with what differs; each fills in as its video lands."""

    def __init__(self, gens: list[Generation], *, title: str = ""):
        self.tiles = [GenerationView(g, compact=True) for g in gens]
        cols = 2 if len(gens) == 4 else min(len(gens), 3)
        heading = w.HTML(f"<b>{render.html.escape(title)}</b>" if title else "")
        notes = w.HTML(
            f'<div style="color:#9a6700;font-size:12px">{render.html.escape(render.SIMULATED_NOTE)}</div>'
            if any(g.simulated for g in gens)
            else ""
        )
        grid = w.GridBox(
            [t.box for t in self.tiles],
            layout=w.Layout(grid_template_columns=f"repeat({max(cols, 1)}, minmax(0, 1fr))", grid_gap="8px"),
        )
        self.box = w.VBox([heading, grid, notes])

    def resend(self) -> None:
        for t in self.tiles:
            t.resend()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = render.grid_text([render.Snapshot.of(t.gen) for t in self.tiles])
        return bundle


class _Ticker:
    """Advances elapsed-time labels of unfinished views once a second, from one thread."""

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
                    v.elapsed.value = render.elapsed_text(v.gen.elapsed)
                except Exception:  # a closed widget: forget it
                    with self._lock:
                        self._views.discard(v)


_TICKER = _Ticker()
