"""Tracking generations in the background: one daemon poller thread per kernel plus a small
pool of daemon workers (docs/design-notes.md section 1: blocking I/O on the kernel's event
loop freezes every cell; asyncio tasks never run in terminal IPython; a thread always does,
and a Ctrl-C in the main thread never reaches it).

    Tracker.start(gen)     upload local media, submit, then poll          (worker jobs)
    Tracker.attach(gen)    poll a task that already exists                (re-run, resume)
    Tracker.fetch(gen)     download a completed task's video again
    Tracker.await_submit   another kernel is submitting this request: watch its journal row
    Tracker.settle(gen)    a generation whose outcome the journal already knows
    Tracker.stitch(gen)    cut finished generations into one film

A generation that refers to others (a frame or the video of an earlier shot) waits for them:
it is submitted the moment they are all completed, with their frames extracted and uploaded,
and fails without sending anything if one of them does not complete.
    poller thread          sleeps until the next job is due, hands it to a worker

The tracker is the only writer of Generation objects (Generation._transition). Its own
bookkeeping (progress samples, misses, the backend a generation talks to) lives in an
_Entry, never on the user's object. One tracker serves a kernel for its whole life: a new
key or new settings give new generations a new Backend, while running ones keep theirs.
A job never lets an exception vanish: anything unexpected detaches the generation with a
message (the task itself goes on and can be picked up again).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    AuthError,
    DeadlineError,
    ExpiredError,
    GenerationFailed,
    KlingError,
    NotFoundError,
    QuotaError,
    SubmitUnknownError,
)
from ..media import frames
from ..media.stitch import stitch as stitch_clips
from .generation import Generation, Snapshot, State, state_for_service
from .schedule import PollSchedule

if TYPE_CHECKING:
    from ..cell.fields import LocalFile
    from ..service.client import Client
    from ..service.status import TaskStatus
    from .journal import Journal, Record
    from .money import Meter

log = logging.getLogger("kling_nb.tracker")

# A submit under way refreshes its journal row this often, so that another kernel waiting
# on the same request (FRESH_SUBMIT_S) knows it is alive, even while it backs off from 429s.
HEARTBEAT_S = 15.0
# A 'submitting' row older than this, with no task id, is a submit whose outcome is unknown.
FRESH_SUBMIT_S = 60.0
OTHER_SUBMIT_LOOK_S = 0.5
# The service said `completed` but gave no video URL: look again this many times (backing
# off) before reporting it. The task is never submitted again for this.
NO_URL_LOOKS = 5


@dataclass(frozen=True)
class Backend:
    """What a generation talks to, fixed for its whole life."""

    client: Client
    journal: Journal
    output_dir: Path
    schedule: PollSchedule = PollSchedule()
    deadline_s: float = 1800.0
    meter: Meter | None = None  # reads the balance around billed submits (engine/money.py)


@dataclass
class _Entry:
    """The tracker's own bookkeeping for one generation."""

    gen: Generation
    backend: Backend
    record_id: int  # every entry is made for a journal row
    started: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    misses: int = 0
    expects_done: bool = False
    no_url_looks: int = 0
    submitting: bool = False
    upstream: dict[str, Generation] = field(default_factory=dict)  # name -> what this one waits on
    waiting_row: bool = False  # its journal row is 'waiting': claim it before submitting
    released: bool = False  # the upstream all finished and the job was handed out


@dataclass(frozen=True)
class _LocalImage:
    """A frame saved for upload (the shape of a cell's local file, for the upload cache)."""

    path: Path
    sha256: str


class _Workers:
    """A fixed number of daemon threads taking jobs from a queue. (ThreadPoolExecutor's
    threads are joined at interpreter exit, which slowed kernel shutdown: design notes 1.)"""

    def __init__(self, count: int, name: str):
        # None: a thread's signal to stop
        self._jobs: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        self._jobs.put((fn, args))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except BaseException:  # the job itself records errors; this is the last net
                log.exception("kling_nb worker job failed")

    def shutdown(self, wait_s: float = 5.0) -> None:
        """Stop the threads once the queued jobs are done, waiting up to `wait_s` for the jobs
        under way (so a journal or client closed next is not pulled from under them)."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + wait_s
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))


class Tracker:
    """Owns the poller thread and the workers of one kernel. Tests make a fresh one."""

    def __init__(
        self,
        *,
        workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._clock = clock
        self._wall = wall_clock
        self._due: list[tuple[float, int, Callable[[_Entry], None], _Entry]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._workers = _Workers(workers, "kling-worker")
        self._thread = threading.Thread(target=self._poll_loop, name="kling-poller", daemon=True)
        self._thread.start()

    # -- entry points ------------------------------------------------------------------
    def start(
        self, gen: Generation, backend: Backend, record_id: int, *, upstream: dict[str, Generation] | None = None
    ) -> None:
        """Upload, submit and track a generation whose journal record says 'new' (after the
        generations it refers to, if any, are completed)."""
        entry = _Entry(gen, backend, record_id, upstream=dict(upstream or {}), waiting_row=bool(upstream))
        if entry.upstream:
            self._after_upstream(entry, self._submit)
        else:
            self._run(self._submit, entry)

    def stitch(self, gen: Generation, backend: Backend, record_id: int, clips: dict[str, Generation]) -> None:
        """Cut `clips` (in order) into one film once they are all completed."""
        self._after_upstream(_Entry(gen, backend, record_id, upstream=dict(clips)), self._stitch)

    def attach(self, gen: Generation, backend: Backend, record: Record, *, origin: str = "reattached") -> None:
        """Track a task that already exists."""
        entry = _Entry(gen, backend, record.id, started=self._clock())
        gen._transition(
            state_for_service(record.status) if record.status != "completed" else State.QUEUED,
            task_id=record.task_id,
            progress=record.progress,
            body=record.body,
            origin=origin,
            service_status=record.status,
        )
        self._schedule(self._poll, entry, 0.0)

    def fetch(self, gen: Generation, backend: Backend, record: Record, *, origin: str = "reused") -> None:
        """Download the video of a completed task whose local file is missing."""
        entry = _Entry(gen, backend, record.id, started=self._clock())
        gen._transition(
            State.DOWNLOADING,
            task_id=record.task_id,
            progress=100,
            body=record.body,
            url=record.url,
            expires_at=record.expires_at,
            origin=origin,
        )
        self._run(self._download, entry)

    def await_submit(self, gen: Generation, backend: Backend, record: Record) -> None:
        """Another kernel may be submitting this very request right now: watch its journal row
        for a task id. If none comes while the row stays fresh, the outcome is unknown."""
        gen._transition(
            State.SUBMITTING,
            body=record.body,
            origin="reattached",
            waiting_for="another kernel's submit of this request",
        )
        self._schedule(self._check_other_submit, _Entry(gen, backend, record.id), 0.0)

    def settle(self, gen: Generation, state: State, **fields: Any) -> None:
        """A generation whose outcome the journal already knows (a saved video, a failure)."""
        gen._transition(state, **fields)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._workers.shutdown()

    def wake(self) -> None:
        """Look at the due jobs now (tests that move an injected clock call this)."""
        with self._cond:
            self._cond.notify()

    def _after_upstream(self, entry: _Entry, job: Callable[[_Entry], None]) -> None:
        entry.gen._transition(State.WAITING, waiting_for=", ".join(entry.upstream))

        def on_change(snap: Snapshot) -> None:
            if snap.done:
                self._release(entry, job)

        for up in entry.upstream.values():
            up.add_listener(on_change)
        self._release(entry, job)  # some may have finished before the listeners were added

    def _release(self, entry: _Entry, job: Callable[[_Entry], None]) -> None:
        with self._cond:
            if entry.released or not all(up.snapshot().done for up in entry.upstream.values()):
                return
            entry.released = True
        self._run(job, entry)

    # -- the poller thread -------------------------------------------------------------
    def _schedule(self, job: Callable[[_Entry], None], entry: _Entry, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (self._clock() + delay, next(self._seq), job, entry))
            self._cond.notify()

    def _poll_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = self._clock()
                    if self._due and self._due[0][0] <= now:
                        break
                    timeout = (self._due[0][0] - now) if self._due else None
                    # An injected clock may not move with real time: look again soon.
                    self._cond.wait(None if timeout is None else min(timeout, 1.0))
                if self._stopped:
                    return
                due = []
                now = self._clock()
                while self._due and self._due[0][0] <= now:
                    _, _, job, entry = heapq.heappop(self._due)
                    due.append((job, entry))
            for job, entry in due:
                self._run(job, entry)

    # -- worker jobs -------------------------------------------------------------------
    def _run(self, job: Callable[[_Entry], None], entry: _Entry) -> None:
        self._workers.submit(self._guarded, job, entry)

    def _guarded(self, job: Callable[[_Entry], None], entry: _Entry) -> None:
        """No silent failures in the background: a bug or a broken journal ends the job with
        a message on the generation (tracking stops; the task itself goes on)."""
        try:
            job(entry)
        except Exception as err:
            log.exception("kling_nb background job failed")
            if not entry.gen.done:
                entry.gen._transition(
                    State.DETACHED,
                    error=KlingError(
                        f"internal error while tracking ({type(err).__name__}: {str(err)[:200]}); the task goes on: "
                        "re-run the cell or `%kling resume` to pick it up"
                    ),
                )

    def _submit(self, entry: _Entry) -> None:
        gen, b = entry.gen, entry.backend
        missing = self._not_completed(entry)
        if missing:
            self._fail(entry, KlingError(f"{missing} did not complete, so nothing was sent for this generation"))
            return
        try:
            urls: dict[str, str] = {}
            resolved: dict[tuple[Any, ...], str] = {}
            if gen.request.uploads or gen.request.references:
                if gen.status == State.WAITING:
                    gen._transition(State.UPLOADING, waiting_for=None)
                for local in gen.request.uploads:
                    urls[local.sha256] = self._upload(b, local)
                for ref in gen.request.references:
                    resolved[ref.where] = self._resolve(entry, ref)
            if entry.waiting_row and not b.journal.claim(entry.record_id):
                # Another kernel running the same story claimed it first: follow its submit.
                gen._transition(State.SUBMITTING, waiting_for="another kernel's submit of this request")
                self._schedule(self._check_other_submit, entry, 0.0)
                return
            body = gen.request.with_urls(urls, resolved) if (urls or resolved) else gen.request.body
            gen._transition(State.SUBMITTING, body=body, task_id=None, progress=0)
            entry.submitting = True
            self._schedule(self._heartbeat, entry, HEARTBEAT_S)
            if b.meter is not None:
                b.meter.before_submit()
            task = b.client.submit(body)
        except KlingError as err:
            self._fail(entry, err)
            return
        finally:
            entry.submitting = False
        b.journal.set_task(entry.record_id, task)
        entry.started = self._clock()
        if b.meter is not None:
            b.meter.charged(body)
        self._apply(entry, task)

    def _not_completed(self, entry: _Entry) -> str | None:
        """The name of a generation this one waits on that did not complete, if any."""
        for name, up in entry.upstream.items():
            snap = up.snapshot()
            if snap.status != State.COMPLETED or snap.video_path is None:
                return f"{name} ({snap.status})"
        return None

    def _resolve(self, entry: _Entry, ref: Any) -> str:
        """The URL that stands for a reference: a frame of the earlier video, extracted here
        and uploaded once (by content), or the earlier video's own result URL."""
        up = entry.upstream[ref.name].snapshot()
        b = entry.backend
        if ref.kind == "video":
            if not up.url or (up.expires_at is not None and up.expires_at <= self._wall()):
                raise ExpiredError(
                    f"the video URL of {ref.name} has expired (result URLs last 24 h) and the service takes "
                    f"reference videos by URL only: re-run {ref.name} with --force, or host its video and give the URL"
                )
            return up.url
        assert up.video_path is not None
        still = frames.save_frame(up.video_path, ref.frame, b.output_dir / "frames")
        return self._upload(b, _LocalImage(still, sha256_of(still)))

    def _heartbeat(self, entry: _Entry) -> None:
        if entry.submitting:
            entry.backend.journal.touch(entry.record_id)
            self._schedule(self._heartbeat, entry, HEARTBEAT_S)

    def _check_other_submit(self, entry: _Entry) -> None:
        gen, journal = entry.gen, entry.backend.journal
        row = journal.get(entry.record_id)
        if row.task_id:
            entry.started = self._clock()
            gen._transition(state_for_service(row.status), task_id=row.task_id, progress=row.progress, waiting_for=None)
            self._schedule(self._poll, entry, 0.0)
        elif row.status == "submitting" and row.updated_at + FRESH_SUBMIT_S > self._wall():
            self._schedule(self._check_other_submit, entry, OTHER_SUBMIT_LOOK_S)
        else:
            gen._transition(
                State.UNKNOWN,
                waiting_for=None,
                error=SubmitUnknownError(
                    "an earlier submit of this exact request got no answer (the kernel stopped, or the "
                    "connection dropped), so it may have been accepted and billed. Check your dashboard; "
                    "re-run with --force to submit it again."
                ),
            )

    def _upload(self, b: Backend, local: LocalFile | _LocalImage) -> str:
        url = b.journal.upload_url(local.sha256)
        if url is None:
            url = b.client.upload(local.path)
            # The upload reply carries no expiry; assume the 24 h of result URLs, less a margin.
            b.journal.record_upload(local.sha256, url, self._wall() + 23 * 3600)
        return url

    def _poll(self, entry: _Entry) -> None:
        gen, b = entry.gen, entry.backend
        if self._clock() - entry.started > b.deadline_s:
            gen._transition(
                State.DETACHED,
                error=DeadlineError(
                    f"stopped waiting after {b.deadline_s:g} s; the generation goes on: "
                    "re-run the cell or `%kling resume` to pick it up again"
                ),
            )
            return
        try:
            task = b.client.status(gen.task_id)
        except NotFoundError as err:
            if gen.simulated and gen.origin == "reattached":
                self._restart_simulated(entry)
            else:
                self._fail(entry, err)
            return
        except (AuthError, QuotaError) as err:
            # Asking again will not help, but the task may still finish: keep it resumable.
            self._detach(entry, err)
            return
        except KlingError as err:
            # Retries inside the client were exhausted: a longer outage. Keep the task, say
            # so, and look again at the normal rhythm.
            log.warning("status of %s unavailable: %s", gen.task_id, err.message)
            self._schedule(self._poll, entry, b.schedule.interval_s)
            return
        if not entry.expects_done or task.status != "completed":
            entry.misses = entry.misses + 1 if entry.expects_done else 0
        entry.samples.append((self._clock(), task.progress))
        self._apply(entry, task)

    def _restart_simulated(self, entry: _Entry) -> None:
        """The embedded simulator lives and dies with its kernel, and its tasks with it. A
        simulated generation is free, so one lost that way is simply started again."""
        gen, journal = entry.gen, entry.backend.journal
        assert gen.identity is not None  # the session gives every tracked generation its journal identity
        journal.record_error(
            entry.record_id, "simulator_restarted", "the simulator that ran this task has stopped", final=True
        )
        _, record = journal.begin(
            gen.identity, gen.request.body, name=gen.name, label=gen.label, force=True, run_id=gen.run_id
        )
        entry.record_id = record.id
        entry.samples.clear()
        gen._transition(State.SUBMITTING, task_id=None, progress=0, origin="restarted")
        self._submit(entry)

    def _apply(self, entry: _Entry, task: TaskStatus) -> None:
        """Bring a generation up to date with the service's view of its task."""
        gen, b = entry.gen, entry.backend
        if task.status == "completed" and not task.url:
            # Completed without a URL: never trust it, never resubmit; look again a few times.
            entry.no_url_looks += 1
            if entry.no_url_looks > NO_URL_LOOKS:
                self._detach(
                    entry,
                    KlingError(
                        f"the service reports task {task.id} completed but gives no video URL; nothing "
                        "was submitted again: re-run the cell or `%kling resume` later to look again"
                    ),
                )
                return
            gen._transition(State.IN_PROGRESS, task_id=task.id, progress=100, service_status="completed")
            self._schedule(self._poll, entry, min(b.schedule.max_s, b.schedule.min_s * 2**entry.no_url_looks))
            return
        b.journal.record_status(entry.record_id, task)
        if task.status == "failed":
            err = GenerationFailed(
                task.error_message or "the service reported the generation failed",
                code=task.error_code,
                task_id=task.id,
            )
            gen._transition(
                State.FAILED, progress=task.progress, task_id=task.id, service_status=task.status, error=err
            )
        elif task.status == "completed":
            gen._transition(
                State.DOWNLOADING,
                progress=100,
                task_id=task.id,
                url=task.url,
                expires_at=task.expires_at,
                service_status=task.status,
                thumbnail_url=getattr(task, "thumbnail_url", None),
            )
            # A job of its own: a burst of finished variants must not hold up the status polls
            # of the others behind their downloads.
            self._run(self._download, entry)
        else:
            gen._transition(
                state_for_service(task.status), progress=task.progress, task_id=task.id, service_status=task.status
            )
            delay, entry.expects_done = b.schedule.next_delay(entry.samples, entry.misses)
            self._schedule(self._poll, entry, delay)

    def _download(self, entry: _Entry) -> None:
        gen, b = entry.gen, entry.backend
        if gen.expires_at is not None and gen.expires_at <= self._wall():
            self._fail(entry, expired_error(gen.task_id, gen.expires_at), final=False)
            return
        try:
            dest = video_path_for(b.output_dir, gen.name, gen.task_id)
            path = b.client.download(gen.url, dest)
            digest = sha256_of(path)
        except ExpiredError as err:  # gone for good
            self._fail(entry, err, final=False)
            return
        except KlingError as err:  # may work next time: the re-run fetches it, never resubmits
            self._detach(entry, err)
            return
        b.journal.record_video(entry.record_id, str(path.relative_to(b.output_dir)), digest)
        gen._transition(State.COMPLETED, progress=100, video_path=path, poster_path=frames.ensure_poster(path))

    def _stitch(self, entry: _Entry) -> None:
        gen, b = entry.gen, entry.backend
        missing = self._not_completed(entry)
        if missing:
            self._fail(entry, KlingError(f"{missing} did not complete, so the film was not made"))
            return
        clips = [up.snapshot().video_path for up in entry.upstream.values()]
        dest = video_path_for(b.output_dir, f"{gen.name or 'film'}-film", (gen.identity or "")[-12:])
        path = stitch_clips([c for c in clips if c is not None], dest)
        b.journal.record_video(entry.record_id, str(path.relative_to(b.output_dir)), sha256_of(path))
        gen._transition(
            State.COMPLETED, progress=100, video_path=path, poster_path=frames.ensure_poster(path), waiting_for=None
        )

    def _detach(self, entry: _Entry, err: KlingError) -> None:
        """Stop tracking, keep the task resumable: the journal keeps its status."""
        try:
            entry.backend.journal.record_error(entry.record_id, getattr(err, "code", None), err.message, final=False)
        except Exception:
            log.exception("could not record an error in the journal")
        entry.gen._transition(State.DETACHED, error=err)

    def _fail(self, entry: _Entry, err: KlingError, *, final: bool = True) -> None:
        """Record and show an error. `final=False` keeps the journal's task status (a video
        that could not be saved is still a completed, billed task)."""
        gen, journal = entry.gen, entry.backend.journal
        unknown = isinstance(err, SubmitUnknownError)
        if isinstance(err, QuotaError):
            err = _quota_error(err, entry.backend.meter)
        try:
            if unknown:
                journal.mark_unknown(entry.record_id, err.message)
            else:
                journal.record_error(entry.record_id, getattr(err, "code", None), err.message, final=final)
        except Exception:
            log.exception("could not record an error in the journal")
        gen._transition(State.UNKNOWN if unknown else State.FAILED, error=err, waiting_for=None)


def _quota_error(err: QuotaError, meter: Meter | None) -> QuotaError:
    """A 402 said plainly: whose quota, what is left if known, what to do, and that nothing
    will be sent again without asking."""
    left = ""
    balance = meter.reading(fresh=True) if meter is not None else None  # one GET, on a rare refusal
    if balance is not None and balance.remaining_credits is not None:
        left = f" It has {balance.remaining_credits:g} credits left (%kling balance)."
    return QuotaError(
        f"this key's quota is used up ({err.service_message}): the service refused the generation, so "
        f"nothing was billed.{left} Add credits or use another key (%kling login); a re-run shows this "
        "again without sending, --force sends it again.",
        status=err.status,
        code=err.code,
        type=err.type,
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def video_path_for(output_dir: Path, name: str | None, task_id: str | None) -> Path:
    """`<output_dir>/<name>-<task>.mp4`, built only from safe characters, so neither a
    user's name nor a hostile task id from the server can point outside the folder."""
    stem = _UNSAFE.sub("-", name or "kling").strip("-")[:40] or "kling"
    tail = _UNSAFE.sub("", task_id or "")[-16:] or hashlib.sha1(str(time.time()).encode()).hexdigest()[:12]
    path = (Path(output_dir) / f"{stem}-{tail}.mp4").resolve()
    if path.parent != Path(output_dir).resolve():  # defence in depth; cannot happen by construction
        raise KlingError("refusing a video path outside the output folder")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expired_error(task_id: str | None, expires_at: float | None) -> ExpiredError:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires_at)) if expires_at else "an unknown time"
    return ExpiredError(
        f"the video of task {task_id} was not saved locally and its URL expired at {when}; "
        "it is gone from the service. Re-run with --force to generate it again (billed again)."
    )


__all__ = ["Backend", "Tracker", "expired_error", "video_path_for"]
