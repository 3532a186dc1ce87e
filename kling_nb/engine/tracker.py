"""Tracking generations in the background: one daemon poller thread per kernel plus a small
pool of daemon HTTP workers (FIELD-NOTES section 1: blocking I/O on the kernel's event loop
freezes every cell; asyncio tasks never run in terminal IPython; a thread always does and a
Ctrl-C in the main thread never reaches it).

    Tracker.start(gen)   upload local media, submit, then poll        (worker pool)
    Tracker.attach(gen)  poll a task that already exists               (re-run, resume)
    poller thread        sleeps until the next task is due, hands it to a worker
    worker               status -> journal -> Generation; completed -> download -> journal

Every state change lands in the Generation (a thread-safe object the user holds) and in the
journal; listeners (the widget, the display updater) are told after each change. A worker
never lets an exception vanish: anything unexpected becomes the generation's error.
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
from .schedule import PollSchedule
from ..service.status import TaskStatus

if TYPE_CHECKING:
    from ..service.client import Client
    from .journal import Journal
    from ..cell.spec import Request

log = logging.getLogger("kling_nb.tracker")

PENDING_LOCAL = ("waiting", "uploading", "submitting")  # before the service has a task id


class Generation:
    """One generation: what was asked, where it stands, and where its video went.

    Attributes are read by the user's code while worker threads update them; each update
    takes the lock and then tells the listeners.
    """

    def __init__(self, request: Request, *, name: str | None = None, label: dict | None = None):
        self.request = request
        self.name = name
        self.label = dict(label or {})
        self.body: dict = request.body  # replaced by the body actually sent (uploaded URLs)
        self.status = "waiting"
        self.progress = 0
        self.task_id: str | None = None
        self.url: str | None = None
        self.expires_at: int | None = None
        self.video_path: Path | None = None
        self.error: KlingError | None = None
        self.origin = "new"  # new | reused | reattached: what this run did, told to the user
        self.record_id: int | None = None
        self.run_id: str | None = None  # the cell execution (or compare) it belongs to
        self.identity: str | None = None  # the journal's key for this request
        self.started = time.monotonic()
        self.finished: float | None = None
        self.simulated = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._listeners: list[Callable[[Generation], None]] = []
        # poller bookkeeping
        self._samples: list[tuple[float, int]] = []
        self._misses = 0
        self._expects_done = False

    # -- what users read ---------------------------------------------------------------
    @property
    def prompt(self) -> str:
        return str(self.body.get("prompt", ""))

    @property
    def done(self) -> bool:
        """True once nothing more will happen without the user asking (final, or gave up)."""
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

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

    def __repr__(self) -> str:
        who = f"{self.name!r}, " if self.name else ""
        where = f", video={str(self.video_path)!r}" if self.video_path else ""
        return f"<Generation {who}status={self.status!r}, progress={self.progress}, task_id={self.task_id!r}{where}>"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        from ..notebook import render

        snap = render.Snapshot.of(self)
        return {"text/plain": render.status_line(snap), "text/html": render.generation_html(snap)}

    # -- updates (worker threads) ------------------------------------------------------
    def add_listener(self, fn: Callable[[Generation], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def _update(self, **fields: Any) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self, key, value)
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(self)
            except Exception:  # a broken view must not stop tracking; but say so
                log.exception("a kling_nb listener failed")

    def _finish(self, **fields: Any) -> None:
        fields.setdefault("finished", time.monotonic())
        with self._lock:
            self._done.set()
        self._update(**fields)

    def _reopen(self) -> None:
        """Tracking starts again (resume after a deadline, retry)."""
        self._done.clear()
        self.finished = None
        self.error = None
        self._samples.clear()
        self._misses = 0


class Generations(list):
    """The generations of one sweep or compare, in grid order, with a combined wait."""

    def wait(self, timeout: float | None = None) -> Generations:
        end = None if timeout is None else time.monotonic() + timeout
        for gen in self:
            gen.wait(None if end is None else max(0.0, end - time.monotonic()))
        return self

    @property
    def done(self) -> bool:
        return all(g.done for g in self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        from ..notebook import render

        return render.grid_bundle([render.Snapshot.of(g) for g in self])


class _Workers:
    """A fixed number of daemon threads taking jobs from a queue. (ThreadPoolExecutor's
    threads are joined at interpreter exit, which slowed kernel shutdown: FIELD-NOTES 1.)"""

    def __init__(self, count: int, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(count)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable, *args: Any) -> None:
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

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


class Tracker:
    """Owns the poller thread and the workers for one kernel. Make a fresh one per test."""

    def __init__(
        self,
        client: Client,
        journal: Journal,
        output_dir: Path,
        *,
        schedule: PollSchedule = PollSchedule(),
        deadline_s: float = 1800.0,
        workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.journal = journal
        self.output_dir = Path(output_dir)
        self.schedule = schedule
        self.deadline_s = deadline_s
        self._clock = clock
        self._due: list[tuple[float, int, Generation]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._workers = _Workers(workers, "kling-worker")
        self._thread = threading.Thread(target=self._poll_loop, name="kling-poller", daemon=True)
        self._thread.start()

    # -- entry points ------------------------------------------------------------------
    def start(self, gen: Generation) -> None:
        """Upload, submit and track a generation whose journal record says 'new'."""
        self._run(self._submit, gen)

    def attach(self, gen: Generation) -> None:
        """Track a task that already exists (its task_id is set)."""
        gen._reopen()
        gen.started = self._clock()
        self._schedule(gen, 0.0)

    def fetch(self, gen: Generation) -> None:
        """Download the video of a completed task whose local file is missing."""
        gen._reopen()
        self._run(self._download, gen)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._workers.shutdown()

    # -- the poller thread -------------------------------------------------------------
    def _schedule(self, gen: Generation, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (self._clock() + delay, next(self._seq), gen))
            self._cond.notify()

    def _poll_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = self._clock()
                    if self._due and self._due[0][0] <= now:
                        break
                    timeout = (self._due[0][0] - now) if self._due else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                due = []
                now = self._clock()
                while self._due and self._due[0][0] <= now:
                    due.append(heapq.heappop(self._due)[2])
            for gen in due:
                self._run(self._poll, gen)

    # -- worker jobs -------------------------------------------------------------------
    def _run(self, job: Callable[[Generation], None], gen: Generation) -> None:
        self._workers.submit(self._guarded, job, gen)

    def _guarded(self, job: Callable[[Generation], None], gen: Generation) -> None:
        """No silent failures in the background: a bug or a broken journal ends the job with
        a message on the generation (tracking stops; the task itself goes on)."""
        try:
            job(gen)
        except Exception as err:
            log.exception("kling_nb background job failed")
            gen._finish(error=KlingError(
                f"internal error while tracking ({type(err).__name__}: {str(err)[:200]}); the task goes on: "
                "re-run the cell or `%kling resume` to pick it up"))

    def _submit(self, gen: Generation) -> None:
        try:
            urls = {}
            if gen.request.uploads:
                gen._update(status="uploading")
                for local in gen.request.uploads:
                    urls[local.sha256] = self._upload(local)
            body = gen.request.with_urls(urls) if urls else gen.request.body
            gen._update(status="submitting", body=body)
            task = self.client.submit(body)
        except KlingError as err:
            self._fail(gen, err)
            return
        except Exception as err:  # an unexpected bug must still end the generation visibly
            log.exception("submit failed")
            self._fail(gen, KlingError(f"internal error while submitting: {type(err).__name__}"))
            return
        self.journal.set_task(gen.record_id, task)
        gen.started = self._clock()
        self._apply(gen, task)
        if not gen.done:
            self._schedule(gen, self.schedule.first_s)

    def _upload(self, local) -> str:
        url = self.journal.upload_url(local.sha256)
        if url is None:
            url = self.client.upload(local.path)
            # The upload reply carries no expiry; assume the 24 h of result URLs, less a margin.
            self.journal.record_upload(local.sha256, url, time.time() + 23 * 3600)
        return url

    def _poll(self, gen: Generation) -> None:
        if self._clock() - gen.started > self.deadline_s:
            gen._finish(
                error=DeadlineError(
                    f"stopped waiting after {self.deadline_s:g} s; the generation goes on: "
                    "re-run the cell or `%kling resume` to pick it up again"
                )
            )
            return
        try:
            task = self.client.status(gen.task_id)
        except NotFoundError as err:
            if gen.simulated and gen.origin == "reattached":
                self._restart_simulated(gen)
            else:
                self._fail(gen, err)
            return
        except (AuthError, QuotaError) as err:
            self._fail(gen, err)  # will not get better by asking again
            return
        except KlingError as err:
            # Retries inside the client were exhausted: a longer outage. Keep the task, say
            # so, and look again at the normal rhythm.
            log.warning("status of %s unavailable: %s", gen.task_id, err.message)
            self._schedule(gen, self.schedule.interval_s)
            return
        except Exception:
            log.exception("status poll failed")
            self._schedule(gen, self.schedule.interval_s)
            return
        self.journal.record_status(gen.record_id, task)
        self._apply(gen, task)
        if gen.done or task.status == "completed":
            return
        gen._misses = gen._misses + 1 if gen._expects_done else 0
        gen._samples.append((self._clock(), task.progress))
        delay, gen._expects_done = self.schedule.next_delay(gen._samples, gen._misses)
        self._schedule(gen, delay)

    def _restart_simulated(self, gen: Generation) -> None:
        """The embedded simulator lives and dies with its kernel, and its tasks with it. A
        simulated generation is free, so one lost that way is simply started again."""
        self.journal.record_error(
            gen.record_id, "simulator_restarted", "the simulator that ran this task has stopped", final=True
        )
        _, record = self.journal.begin(
            gen.identity, gen.request.body, name=gen.name, label=gen.label, force=True, run_id=gen.run_id
        )
        gen.record_id, gen.task_id, gen.origin = record.id, None, "restarted"
        gen._update(status="waiting", progress=0)
        self._submit(gen)

    def _apply(self, gen: Generation, task: TaskStatus) -> None:
        """Bring a generation up to date with the service's view of its task."""
        if task.status == "failed":
            err = GenerationFailed(
                task.error_message or "the service reported the generation failed",
                code=task.error_code,
                task_id=task.id,
            )
            gen._finish(status="failed", progress=task.progress, task_id=task.id, error=err)
        elif task.status == "completed":
            gen._update(
                status="downloading", progress=100, task_id=task.id, url=task.url, expires_at=task.expires_at
            )
            # A job of its own: a burst of finished variants must not hold up the status polls
            # of the others behind their downloads.
            self._run(self._download, gen)
        else:
            gen._update(status=task.status, progress=task.progress, task_id=task.id)

    def _download(self, gen: Generation) -> None:
        if not gen.url:
            self._fail(gen, KlingError("the service reported completion without a video URL"))
            return
        if gen.expires_at is not None and gen.expires_at <= time.time():
            self._fail(gen, expired_error(gen.task_id, gen.expires_at), final=False)
            return
        try:
            dest = video_path_for(self.output_dir, gen.name, gen.task_id)
            path = self.client.download(gen.url, dest)
            digest = sha256_of(path)
        except KlingError as err:
            self._fail(gen, err, final=False)
            return
        except Exception as err:
            log.exception("download failed")
            self._fail(gen, KlingError(f"internal error while downloading: {type(err).__name__}"), final=False)
            return
        self.journal.record_video(gen.record_id, str(path.relative_to(self.output_dir)), digest)
        gen._finish(status="completed", progress=100, video_path=path)

    def _fail(self, gen: Generation, err: KlingError, *, final: bool = True) -> None:
        """Record and show an error. `final=False` keeps the task's status (a video that
        could not be saved is still a completed, billed task)."""
        try:
            if gen.record_id is None:
                pass
            elif isinstance(err, SubmitUnknownError):
                self.journal.mark_unknown(gen.record_id, err.message)
            else:
                self.journal.record_error(gen.record_id, getattr(err, "code", None), err.message, final=final)
        except Exception:
            log.exception("could not record an error in the journal")
        if final or gen.status in PENDING_LOCAL:
            gen._finish(status="failed", error=err)
        else:
            gen._finish(error=err)


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


__all__ = ["Generation", "Generations", "Tracker", "video_path_for"]
