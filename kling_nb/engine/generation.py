"""One generation's lifecycle: its states, the transitions allowed between them, and the
object a user holds.

    waiting --> uploading --> submitting --> queued <--> in_progress --> downloading --> completed
       |            |             |             |             |               |
       +------------+-------------+-------------+-------------+---------------+--> failed
                                  +--> unknown     (sent, no answer: may be billed, never resent)
       any state before the end ------> detached   (kling_nb stopped tracking; the task goes on)

Final states are completed, failed, unknown and detached: nothing more happens to that
Generation object (a re-run, `%kling resume` or `--force` makes a new one).

One writer: the tracker is the only code that calls `Generation._transition`. A transition
is applied atomically: the new immutable Snapshot is built from all of its fields and
stored under the lock; listeners (the views, the cell's output) are told; only then is the
waiters' event set. Everyone else (the user, the widget, the renderer, `%kling wait`) reads
Snapshots, so nobody ever sees `done` with stale fields, and `wait()` returns after the
final output was sent.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DeadlineError, KlingError

if TYPE_CHECKING:
    from ..cell.spec import Request

log = logging.getLogger("kling_nb.generation")


class State(enum.StrEnum):
    WAITING = "waiting"  # created; not yet started (or waiting for another kernel's submit)
    UPLOADING = "uploading"  # local images going to the upload endpoint
    SUBMITTING = "submitting"  # the billed POST is under way
    QUEUED = "queued"  # the service has the task (also its `submitted` and unknown pending states)
    IN_PROGRESS = "in_progress"
    DOWNLOADING = "downloading"  # the task completed; its video is being saved
    COMPLETED = "completed"  # the video is saved (or was saved before)
    FAILED = "failed"  # refused, failed by the service, or its video is gone for good
    UNKNOWN = "unknown"  # a submit got no usable answer: it may have been billed
    DETACHED = "detached"  # tracking stopped (deadline, lost connection, a bug); the task goes on


FINAL = frozenset({State.COMPLETED, State.FAILED, State.UNKNOWN, State.DETACHED})
_ACTIVE = {State.QUEUED, State.IN_PROGRESS, State.DOWNLOADING}
_ENDS = {State.FAILED, State.DETACHED}

# Written once: from each state, the states it may move to. A state may always be
# re-entered while not final (progress changes), which is not listed.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.WAITING: frozenset(set(State) - {State.WAITING}),
    State.UPLOADING: frozenset({State.SUBMITTING} | _ENDS),
    State.SUBMITTING: frozenset(_ACTIVE | _ENDS | {State.UNKNOWN}),
    # A simulated task lost with its simulator is submitted again (free): -> submitting.
    State.QUEUED: frozenset(_ACTIVE | _ENDS | {State.SUBMITTING}),
    State.IN_PROGRESS: frozenset(_ACTIVE | _ENDS | {State.SUBMITTING}),
    State.DOWNLOADING: frozenset({State.COMPLETED} | _ENDS),
    **{s: frozenset() for s in FINAL},
}


def state_for_service(status: str) -> State:
    """The service's task status as a State: completed videos still need downloading, and any
    status the vendor adds later (or its `submitted`) counts as waiting in the queue."""
    if status == "in_progress":
        return State.IN_PROGRESS
    if status == "completed":
        return State.DOWNLOADING
    if status == "failed":
        return State.FAILED
    return State.QUEUED


class IllegalTransition(KlingError):
    """A bug: something tried a transition the state machine does not allow."""


@dataclass(frozen=True)
class Snapshot:
    """A generation frozen at one moment: what every view, and every reader, is built from."""

    status: State
    body: dict[str, Any]
    name: str | None = None
    label: dict[str, Any] = field(default_factory=dict)
    progress: int = 0
    service_status: str | None = None  # the service's own word (e.g. `submitted`)
    task_id: str | None = None
    url: str | None = None
    expires_at: float | None = None
    thumbnail_url: str | None = None
    video_path: Path | None = None
    poster_path: Path | None = None  # a small JPEG still beside the video
    error: KlingError | None = None
    origin: str = "new"  # new | reused | reattached | restarted: what this run did
    simulated: bool = False
    waiting_for: str | None = None  # what a waiting generation waits on, in words
    elapsed_s: float = 0.0
    version: int = 0  # rises with every transition: a view drops a snapshot older than its last

    @property
    def done(self) -> bool:
        return self.status in FINAL

    @property
    def prompt(self) -> str:
        return str(self.body.get("prompt", ""))


class Generation:
    """One generation: what was asked, where it stands, and where its video went.

    Every attribute reads the current Snapshot; worker threads never change one in place.
    """

    def __init__(
        self,
        request: Request,
        *,
        name: str | None = None,
        label: dict[str, Any] | None = None,
        simulated: bool = False,
        identity: str | None = None,
        run_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.request = request
        self.identity = identity  # the journal's key for this request
        self.run_id = run_id  # the cell execution (or compare) it belongs to
        self._clock = clock
        self._started = clock()
        self._finished: float | None = None
        self._snap = Snapshot(
            status=State.WAITING, body=request.body, name=name, label=dict(label or {}), simulated=simulated
        )
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._listeners: list[Callable[[Snapshot], None]] = []

    # -- reading -----------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            end = self._finished if self._finished is not None else self._clock()
            return dataclasses.replace(self._snap, elapsed_s=end - self._started)

    @property
    def status(self) -> State:
        return self._snap.status

    @property
    def done(self) -> bool:
        """True once nothing more will happen to this object (a final state)."""
        return self._snap.done

    name = property(lambda self: self._snap.name)
    label = property(lambda self: self._snap.label)
    body = property(lambda self: self._snap.body, doc="the body sent (uploaded files as URLs)")
    progress = property(lambda self: self._snap.progress)
    task_id = property(lambda self: self._snap.task_id)
    url = property(lambda self: self._snap.url)
    expires_at = property(lambda self: self._snap.expires_at)
    video_path = property(lambda self: self._snap.video_path)
    error = property(lambda self: self._snap.error)
    origin = property(lambda self: self._snap.origin)
    simulated = property(lambda self: self._snap.simulated)
    prompt = property(lambda self: self._snap.prompt)
    elapsed = property(lambda self: self.snapshot().elapsed_s)

    def wait(self, timeout: float | None = None) -> Generation:
        """Block until this generation is done; Ctrl-C stops the waiting, not the generation.

        Waits in short slices so a KeyboardInterrupt reaches the main thread within 0.2 s.
        Raises DeadlineError if `timeout` passes first (the generation goes on)."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.2):
            if end is not None and time.monotonic() >= end:
                raise DeadlineError(
                    f"stopped waiting after {timeout:g} s; the generation goes on "
                    "(wait again, or `%kling resume` after a restart)"
                )
        return self

    def frame(self, which: str | float = "last") -> Any:
        """A frame of the finished video as a PIL image: "first", "last" or a time in seconds."""
        from ..media import frames

        return frames.frame(self._video(), which)

    def frames(self) -> Any:
        """The finished video's frames as RGB numpy arrays (for mediapy, matplotlib...)."""
        from ..media import frames

        return frames.frames(self._video())

    def _video(self) -> Path:
        path = self._snap.video_path
        if path is None:
            raise KlingError(f"{self._snap.name or 'this generation'} has no saved video ({self._snap.status})")
        return path

    def add_listener(self, fn: Callable[[Snapshot], None]) -> None:
        """`fn(snapshot)` after every transition, from the thread that made it."""
        with self._lock:
            self._listeners.append(fn)

    def __repr__(self) -> str:
        s = self._snap
        who = f"{s.name!r}, " if s.name else ""
        where = f", video={s.video_path.name!r}" if s.video_path else ""
        return f"<Generation {who}status={str(s.status)!r}, progress={s.progress}, task_id={s.task_id!r}{where}>"

    # -- the one writer's entry point (kling_nb.engine.tracker) ---------------------------
    def _transition(self, status: State, **fields: Any) -> Snapshot:
        with self._lock:
            old = self._snap
            if status != old.status or old.done:
                if status not in TRANSITIONS[old.status]:
                    raise IllegalTransition(f"a generation cannot go from {old.status} to {status}")
            new = dataclasses.replace(old, status=status, version=old.version + 1, **fields)
            if new.done:
                self._finished = self._clock()
            self._snap = new  # every field at once
            listeners = list(self._listeners)
            snap = dataclasses.replace(new, elapsed_s=(self._finished or self._clock()) - self._started)
        for fn in listeners:
            try:
                fn(snap)
            except Exception:  # a broken view must not stop tracking; but say so
                log.exception("a kling_nb listener failed")
        if new.done:
            # Last: whoever waits wakes to final fields, and to outputs already told of them.
            self._done.set()
        return snap


class Generations(list[Generation]):
    """The generations of one sweep or compare, in grid order, with a combined wait."""

    def wait(self, timeout: float | None = None) -> Generations:
        end = None if timeout is None else time.monotonic() + timeout
        for gen in self:
            gen.wait(None if end is None else max(0.0, end - time.monotonic()))
        return self

    @property
    def done(self) -> bool:
        return all(g.done for g in self)


__all__ = ["FINAL", "Generation", "Generations", "IllegalTransition", "Snapshot", "State", "TRANSITIONS"]
