"""The kernel's kling_nb session: it owns the client, the journal, the tracker and, when no
key is set, the embedded simulator, and it decides for each request what to do about money.

    request --journal.begin--> new        -> tracker.start   (upload, submit: billed)
                               reuse      -> the saved video (nothing sent)
                               reattach   -> tracker.attach  (nothing new sent)
                               unknown    -> wait for the other submitter, else explain

The magic owns one Runtime per shell; scripts may make their own; tests make fresh ones.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

from ..service.client import Client
from ..errors import ConfigError, KlingError, SubmitUnknownError
from .journal import Journal
from .schedule import PollSchedule
from .tracker import Generation, Tracker, expired_error

SIM_KEY = "simulated"  # the embedded simulator accepts any key; this one is not a secret
# A 'submitting' journal row younger than this belongs to a submit that may still be under
# way in another kernel: wait for its task id rather than calling its outcome unknown.
FRESH_SUBMIT_S = 60.0


class Runtime:
    def __init__(
        self,
        *,
        output_dir: str | os.PathLike = "kling_outputs",
        base_url: str | None = None,
        api_key: str | None = None,
        schedule: PollSchedule = PollSchedule(),
        deadline_s: float = 1800.0,
        workers: int = 8,
        sim_config=None,
        client_options: dict | None = None,
        environ=os.environ,
    ):
        self.output_dir = Path(output_dir).resolve()
        self._base_url = base_url or environ.get("TOAPIS_BASE_URL") or None
        self._api_key = api_key or environ.get("TOAPIS_API_KEY") or None
        self._schedule = schedule
        self.deadline_s = deadline_s
        self.workers = workers
        self._environ = environ
        self._sim_config = sim_config
        self._client_options = dict(client_options or {})  # timeouts and retries (tests, tuning)
        self.simulator = None
        self.generations: list[Generation] = []
        self.outputs: list = []  # display.CellOutput of this session, for `%kling wait`
        self._lock = threading.Lock()
        self._tracker: Tracker | None = None
        self._journal: Journal | None = None

    # -- wiring ------------------------------------------------------------------------
    @property
    def schedule(self) -> PollSchedule:
        if not self.simulated:
            return self._schedule
        # The embedded simulator is local and free: look every second so progress shows.
        s = self._schedule
        return PollSchedule(min(s.first_s, 1.0), min(s.interval_s, 1.0), min(s.min_s, 0.2), s.margin_s,
                            max(1.0, min(s.max_s, 5.0)))

    @property
    def simulated(self) -> bool:
        """No key and no base URL: everything goes to the embedded simulator."""
        return self._api_key is None and self._base_url is None

    @property
    def journal(self) -> Journal:
        with self._lock:
            return self._journal_unlocked()

    @property
    def tracker(self) -> Tracker:
        with self._lock:
            if self._tracker is None:
                self._tracker = Tracker(
                    self._make_client(),
                    self._journal_unlocked(),
                    self.output_dir,
                    schedule=self.schedule,
                    deadline_s=self.deadline_s,
                    workers=self.workers,
                )
            return self._tracker

    def _journal_unlocked(self) -> Journal:
        if self._journal is None:
            self._journal = Journal(self.output_dir / "journal.sqlite")
        return self._journal

    def _make_client(self) -> Client:
        if not self.simulated:
            return Client(self._base_url, self._api_key, environ=self._environ, **self._client_options)
        from ..sim import SimConfig, Simulator

        self.simulator = Simulator(config=self._sim_config or SimConfig()).start()
        return Client(self.simulator.base_url, SIM_KEY, environ={}, **self._client_options)

    @property
    def base_url(self) -> str:
        return self.tracker.client.base_url

    def set_key(self, api_key: str) -> None:
        """Use the real service from now on (`%kling login`). Running generations go on."""
        if not api_key:
            raise ConfigError("an empty key was given")
        with self._lock:
            self._api_key = api_key
            old, self._tracker = self._tracker, None
        if old is not None:
            old.close()

    def close(self) -> None:
        with self._lock:
            tracker, self._tracker = self._tracker, None
            journal, self._journal = self._journal, None
        if tracker is not None:
            tracker.close()
            tracker.client.close()
        if journal is not None:
            journal.close()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None

    # -- the money decision ------------------------------------------------------------
    def identity(self, request) -> str:
        """Simulated and real results must never be mistaken for each other: a simulated
        request gets its own identity. (A real result is still reused by a keyless run: see
        run(), so a class can share a folder of real videos.)"""
        return ("sim:" + request.identity) if self.simulated else request.identity

    def run(self, request, *, name: str | None = None, force: bool = False, run_id: str | None = None) -> Generation:
        journal = self.journal
        run_id = run_id or uuid.uuid4().hex
        gen = Generation(request, name=name, label=request.label)
        gen.simulated, gen.run_id, gen.identity = self.simulated, run_id, self.identity(request)
        if self.simulated and not force:
            real = journal.latest(request.identity)
            if real is not None and real.status == "completed" and real.video_path:
                if (self.output_dir / real.video_path).exists():
                    return self._adopt(gen, real, "reuse")
        decision, record = journal.begin(
            gen.identity,
            request.body,
            name=name,
            label=request.label,
            force=force,
            run_id=run_id,
            output_dir=self.output_dir,
        )
        self._adopt(gen, record, decision)
        with self._lock:
            self.generations.append(gen)
        return gen

    def _adopt(self, gen: Generation, record, decision: str) -> Generation:
        tracker = self.tracker
        gen.record_id = record.id
        if decision == "new":
            tracker.start(gen)
            return gen
        gen.body = record.body
        gen.task_id, gen.url, gen.expires_at = record.task_id, record.url, record.expires_at
        if decision == "reattach":
            gen.origin = "reattached"
            gen.status, gen.progress = record.status, record.progress
            tracker.attach(gen)
        elif decision == "reuse":
            gen.origin = "reused"
            path = self.output_dir / record.video_path if record.video_path else None
            if path is not None and path.exists():
                gen._finish(status="completed", progress=100, video_path=path, finished=gen.started)
            elif record.url and (record.expires_at is None or record.expires_at > time.time()):
                gen.status = "downloading"
                tracker.fetch(gen)
            else:
                gen._finish(status="completed", progress=100, error=expired_error(record.task_id, record.expires_at))
        else:  # unknown: a submit without a recorded reply
            gen.origin = "reattached"
            threading.Thread(target=self._await_other_submit, args=(gen, record), daemon=True).start()
        return gen

    def _await_other_submit(self, gen: Generation, record) -> None:
        """Another kernel may be submitting this very request right now: wait for its task
        id. If none comes, the outcome is unknown and only the user can decide to pay again."""
        gen._update(status="submitting")
        deadline = record.updated_at + FRESH_SUBMIT_S
        while time.time() < deadline:
            current = self.journal.get(record.id)
            if current.task_id:
                gen.task_id = current.task_id
                self.tracker.attach(gen)
                return
            if current.status not in ("submitting",):
                break
            time.sleep(0.5)
        gen._finish(
            status="failed",
            error=SubmitUnknownError(
                "an earlier submit of this exact request got no answer (the kernel stopped, or the "
                "connection dropped), so it may have been accepted and billed. Check your dashboard; "
                "re-run with --force to submit it again."
            ),
        )

    # -- sessions ----------------------------------------------------------------------
    def resume(self) -> list[Generation]:
        """Re-attach every in-flight task of the project (after a kernel restart)."""
        live = {g.task_id for g in self.generations if g.task_id and not g.done}
        gens = [self.from_record(r) for r in self.journal.pending() if r.task_id not in live]
        with self._lock:
            self.generations.extend(gens)
        return gens

    def by_name(self, name: str) -> list[Generation]:
        """This session's newest generations called `name`, else the journal's."""
        with self._lock:
            mine = [g for g in self.generations if g.name == name]
        if mine:
            newest = mine[-1].run_id
            return [g for g in mine if g.run_id == newest]
        return [self.from_record(r) for r in self.journal.by_name(name)]

    def from_record(self, record) -> Generation:
        """A generation for a journal entry: its saved video, or its task tracked again."""
        from ..cell.spec import Request

        gen = Generation(Request.from_body(record.body), name=record.name, label=record.label)
        gen.simulated, gen.identity, gen.run_id = record.identity.startswith("sim:"), record.identity, record.run_id
        if record.status == "completed":
            return self._adopt(gen, record, "reuse")
        if record.task_id and not record.is_final:
            return self._adopt(gen, record, "reattach")
        gen.task_id, gen.origin = record.task_id, "reused"
        gen._finish(status="failed", error=KlingError(record.error_message or f"status {record.status}"))
        return gen

    def pending(self) -> list[Generation]:
        with self._lock:
            return [g for g in self.generations if not g.done]

    def wait_all(self, timeout: float | None = None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        for gen in list(self.generations):
            gen.wait(None if end is None else max(0.0, end - time.monotonic()))

    def __repr__(self) -> str:
        where = "simulator" if self.simulated else (self._base_url or "https://toapis.com")
        return f"<kling_nb Runtime {where}, output_dir={str(self.output_dir)!r}, {len(self.generations)} generations>"

