"""The kernel's kling_nb session: its settings, its one tracker, its generations, and the
decision for each request about money.

    request --journal.begin--> new        -> tracker.start         (upload, submit: billed)
                               reuse      -> the saved video       (nothing sent)
                               reattach   -> tracker.attach        (nothing new sent)
                               unknown    -> tracker.await_submit  (another kernel's submit, else explain)

One Runtime per kernel, for the life of the kernel (the magic owns it; scripts get one from
kling_nb; tests make fresh ones). `configure()` and `set_key()` change what NEW generations
use (a new Backend); running generations keep their backend and are tracked to the end by
the same tracker, so `%kling wait`, `list`, `resume` and `compare` see all of them.

Reading a setting never starts anything: the simulator (and its libraries: PyAV, NumPy,
Pillow) is started only when a keyless generation is run.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cell.spec import Request
from ..contract import DEFAULT_BASE_URL
from ..errors import ConfigError, KlingError, SpecError, SubmitUnknownError
from ..media import frames
from ..service.client import Client
from ..service.secret import Secret
from .generation import Generation, State
from .journal import Journal, Record
from .money import Meter, key_id
from .schedule import PollSchedule
from .tracker import Backend, Tracker, expired_error

if TYPE_CHECKING:  # imported when first used: with a key set, the simulator never loads
    from ..sim import Simulator

# The embedded simulator accepts any key; this one is not a secret, and (unlike "simulated")
# it never occurs in the simulator's own words, which the client scrubs of the key.
SIM_KEY = "sk-kling-simulator"
_SETTINGS = ("output_dir", "base_url", "api_key", "schedule", "deadline_s", "sim_config", "client_options")


class Runtime:
    def __init__(
        self,
        *,
        output_dir: str | os.PathLike[str] = "kling_outputs",
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        schedule: PollSchedule = PollSchedule(),
        deadline_s: float = 1800.0,
        workers: int = 8,
        sim_config: Any = None,
        client_options: dict[str, Any] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._environ = environ
        self.workers = workers
        self.output_dir = Path(output_dir).resolve()
        self._base_url = base_url or environ.get("TOAPIS_BASE_URL") or None
        self._key = _secret(api_key or environ.get("TOAPIS_API_KEY") or None)
        self._schedule = schedule
        self.deadline_s = deadline_s
        self._sim_config = sim_config
        self._client_options = dict(client_options or {})  # timeouts and retries (tests, tuning)
        self.simulator: Simulator | None = None
        self.generations: list[Generation] = []
        self.outputs: list[Any] = []  # the notebook layer's cell outputs, for `%kling wait`
        self._lock = threading.RLock()
        self._tracker: Tracker | None = None
        self._backend: Backend | None = None
        self._clients: list[Client] = []
        self._journals: dict[Path, Journal] = {}

    # -- settings (reading them starts nothing) -----------------------------------------
    @property
    def simulated(self) -> bool:
        """No key and no base URL: everything goes to the embedded simulator."""
        return self._key is None and self._base_url is None

    @property
    def service_url(self) -> str:
        """Where a real request would go (the dry run's curl shows this)."""
        return (self._base_url or DEFAULT_BASE_URL).rstrip("/")

    @property
    def schedule(self) -> PollSchedule:
        if not self.simulated:
            return self._schedule
        # The embedded simulator is local and free: look every second so progress shows.
        s = self._schedule
        return PollSchedule(
            min(s.first_s, 1.0), min(s.interval_s, 1.0), min(s.min_s, 0.2), s.margin_s, max(1.0, min(s.max_s, 5.0))
        )

    def configure(self, **settings: Any) -> None:
        """Change settings for generations started from now on; running ones go on as they were."""
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for key, value in settings.items():
                if key == "output_dir":
                    self.output_dir = Path(value).resolve()
                elif key == "api_key":
                    self._key = _secret(value)
                elif key == "base_url":
                    self._base_url = value or None
                elif key == "deadline_s":
                    self.deadline_s = value
                else:
                    setattr(self, "_" + key, value)
            self._backend = None

    def set_key(self, api_key: str | Secret) -> None:
        """Use the real service from now on (`%kling login`). Running generations go on."""
        key = _secret(api_key)
        if key is None:
            raise ConfigError("an empty key was given")
        self.configure(api_key=key)

    # -- wiring (started on first use) ----------------------------------------------------
    @property
    def tracker(self) -> Tracker:
        with self._lock:
            if self._tracker is None:
                self._tracker = Tracker(workers=self.workers)
            return self._tracker

    @property
    def journal(self) -> Journal:
        """The journal of the current output folder (opened read-only if it cannot be written)."""
        with self._lock:
            path = self.output_dir / "journal.sqlite"
            if path not in self._journals:
                self._journals[path] = Journal(path)
            return self._journals[path]

    @property
    def backend(self) -> Backend:
        """What new generations talk to: built from the current settings on first use."""
        with self._lock:
            if self._backend is None:
                client = self._make_client()
                meter = Meter(
                    client,
                    self.journal,
                    key="simulator" if self.simulated else key_id(self._key),
                    simulated=self.simulated,
                )
                self._backend = Backend(
                    client,
                    self.journal,
                    self.output_dir,
                    schedule=self.schedule,
                    deadline_s=self.deadline_s,
                    meter=meter,
                )
            return self._backend

    @property
    def meter(self) -> Meter:
        """The balance and spend of the key new generations use."""
        meter = self.backend.meter
        assert meter is not None  # every backend this session makes has one
        return meter

    def would_send(self, requests: Iterable[Request]) -> list[Request]:
        """The requests that a run now would send (not saved, not in flight, not refused
        for good): what a budget is checked against."""
        sending = []
        for request in requests:
            upstream = {}
            for ref in request.references:
                found = self.by_name(ref.name)  # not there yet: made earlier in the same cell
                if len(found) == 1:
                    upstream[ref.name] = found[0]
            if self.journal.would_send(self.identity(request, upstream)):
                sending.append(request)
        return sending

    def _make_client(self) -> Client:
        if self.simulated:
            if self.simulator is None:
                from ..sim import SimConfig, Simulator

                cfg = self._sim_config
                config = SimConfig(**cfg) if isinstance(cfg, dict) else (cfg or SimConfig())
                self.simulator = Simulator(config=config).start()
            client = Client(self.simulator.base_url, SIM_KEY, environ={}, **self._client_options)
        else:
            client = Client(self._base_url, self._key, environ=self._environ, **self._client_options)
        self._clients.append(client)
        return client

    @property
    def base_url(self) -> str:
        """Where new generations go: the simulator's address once it runs."""
        if self.simulated:
            return self.simulator.base_url if self.simulator is not None else "the embedded simulator (not started)"
        return self.service_url

    def close(self) -> None:
        with self._lock:
            tracker, self._tracker = self._tracker, None
            clients, self._clients = self._clients, []
            journals, self._journals = list(self._journals.values()), {}
            self._backend = None
            simulator, self.simulator = self.simulator, None
        if tracker is not None:
            tracker.close()
        for client in clients:
            client.close()
        for journal in journals:
            journal.close()
        if simulator is not None:
            simulator.stop()

    # -- the money decision ------------------------------------------------------------
    def identity(self, request: Request, upstream: dict[str, Generation] | None = None) -> str:
        """Simulated and real results must never be mistaken for each other: a simulated
        request gets its own identity. (A real result is still reused by a keyless run: see
        run(), so a class can share a folder of real videos.) A request that refers to earlier
        generations is known by theirs."""
        own = request.identity_for({n: g.identity or n for n, g in (upstream or {}).items()})
        return ("sim:" + own) if self.simulated else own

    def check_references(self, requests: Iterable[Request]) -> None:
        """Every name a batch refers to exists (earlier in the batch, this session or the
        journal) before anything of it is sent."""
        known = set()
        for request in requests:
            for ref in request.references:
                if ref.name not in known:
                    self._one(ref.name)
            if request.name:
                known.add(request.name)

    def _one(self, name: str) -> Generation:
        found = self.by_name(name)
        if not found:
            raise SpecError(f"no generation named {name!r} in this session or the journal", field="from")
        if len(found) > 1:
            raise SpecError(
                f"{name!r} names {len(found)} generations (a sweep): refer to one of them by its own --name",
                field="from",
            )
        return found[0]

    def run(
        self, request: Request, *, name: str | None = None, force: bool = False, run_id: str | None = None
    ) -> Generation:
        journal = self.journal
        run_id = run_id or uuid.uuid4().hex
        name = request.name or name
        upstream = {ref.name: self._one(ref.name) for ref in request.references}
        identity = self.identity(request, upstream)
        gen = Generation(
            request, name=name, label=request.label, simulated=self.simulated, identity=identity, run_id=run_id
        )
        record: Record | None = None
        decision = "new"
        if self.simulated and not force and not upstream:
            real = journal.latest(request.identity)
            if real is not None and real.status == "completed" and real.video_path:
                if (self.output_dir / real.video_path).exists():
                    record, decision = real, "reuse"
        if record is None:
            decision, record = journal.begin(
                identity,
                request.body,
                name=name,
                label=request.label,
                force=force,
                run_id=run_id,
                waiting=bool(upstream),
            )
        backend = self.backend if decision != "reuse" else None
        self._adopt(gen, record, decision, backend, upstream)
        with self._lock:
            self.generations.append(gen)
        return gen

    def stitch(self, names: list[str], *, name: str, run_id: str | None = None) -> Generation:
        """One film of named generations, in order; made when they are all completed (the call
        returns at once), recorded in the journal so a re-run is free."""
        if not names:
            raise SpecError("name the generations to stitch, in order", field="stitch")
        if not name.isidentifier():
            raise SpecError(f"the film's name must be a Python variable name, not {name!r}", field="stitch")
        clips = {n: self._one(n) for n in names}
        if len(clips) != len(names):
            raise SpecError("each generation can appear once in a film", field="stitch")
        body = {"prompt": " + ".join(names), "film": list(names)}
        identity = "film:" + hashlib.sha256(json.dumps([c.identity for c in clips.values()]).encode()).hexdigest()
        gen = Generation(
            Request(body=body),
            name=name,
            simulated=any(c.simulated for c in clips.values()),
            identity=identity,
            run_id=run_id or uuid.uuid4().hex,
        )
        decision, record = self.journal.begin(identity, body, name=name, run_id=gen.run_id, waiting=True)
        if decision == "reuse":
            self._adopt(gen, record, decision, None)
        else:
            self.tracker.stitch(gen, self.backend, record.id, clips)
        with self._lock:
            self.generations.append(gen)
        return gen

    def _adopt(
        self,
        gen: Generation,
        record: Record,
        decision: str,
        backend: Backend | None,
        upstream: dict[str, Generation] | None = None,
    ) -> Generation:
        tracker = self.tracker
        if decision == "new":
            tracker.start(gen, backend or self.backend, record.id, upstream=upstream)
        elif decision == "reattach":
            tracker.attach(gen, backend or self.backend, record)
        elif decision == "unknown":
            tracker.await_submit(gen, backend or self.backend, record)
        elif record.status == "completed":
            path = self.output_dir / record.video_path if record.video_path else None
            if path is not None and path.is_file() and not path.is_symlink():
                tracker.settle(
                    gen,
                    State.COMPLETED,
                    progress=100,
                    video_path=path,
                    task_id=record.task_id,
                    poster_path=frames.ensure_poster(path),
                    url=record.url,
                    expires_at=record.expires_at,
                    body=record.body,
                    origin="reused",
                )
            elif record.url and not record.is_expired():
                tracker.fetch(gen, backend or self.backend, record)
            else:
                tracker.settle(
                    gen,
                    State.FAILED,
                    progress=100,
                    task_id=record.task_id,
                    body=record.body,
                    origin="reused",
                    error=expired_error(record.task_id, record.expires_at),
                )
        elif record.status == "unknown":
            tracker.settle(
                gen,
                State.UNKNOWN,
                task_id=record.task_id,
                body=record.body,
                origin="reused",
                error=SubmitUnknownError(record.error_message or "the submit's outcome is unknown"),
            )
        else:
            tracker.settle(
                gen,
                State.FAILED,
                task_id=record.task_id,
                body=record.body,
                origin="reused",
                error=KlingError(record.error_message or f"status {record.status}"),
            )
        return gen

    # -- sessions ----------------------------------------------------------------------
    def resume(self) -> list[Generation]:
        """Re-attach every in-flight task of the project (after a kernel restart)."""
        with self._lock:
            live = {g.task_id for g in self.generations if g.task_id and not g.done}
            waiting = {g.identity for g in self.generations if not g.done}
        gens = []
        for record in self.journal.pending():  # oldest first: a story's shots before what waits on them
            if record.status == "waiting":
                if record.identity not in waiting:
                    gen = self._resume_waiting(record)
                    with self._lock:
                        self.generations.append(gen)
                    gens.append(gen)
            elif record.task_id not in live:
                gen = self.from_record(record)
                with self._lock:
                    self.generations.append(gen)
                gens.append(gen)
        return gens

    def _resume_waiting(self, record: Record) -> Generation:
        """A request whose kernel stopped while it waited on others (a shot, a film): wait again."""
        request = Request.from_body(record.body)
        gen = Generation(
            request,
            name=record.name,
            label=record.label,
            simulated=record.identity.startswith("sim:"),
            identity=record.identity,
            run_id=record.run_id,
        )
        try:
            if "film" in record.body:
                names = [str(n) for n in record.body["film"]]
                self.tracker.stitch(gen, self.backend, record.id, {n: self._one(n) for n in names})
            else:
                upstream = {ref.name: self._one(ref.name) for ref in request.references}
                self.tracker.start(gen, self.backend, record.id, upstream=upstream)
        except SpecError as err:  # what it waited on is gone from the journal
            self.tracker.settle(gen, State.FAILED, error=err, origin="reattached")
        return gen

    def by_name(self, name: str) -> list[Generation]:
        """This session's newest generations called `name`, else the journal's."""
        with self._lock:
            mine = [g for g in self.generations if g.name == name]
        if mine:
            newest = mine[-1].run_id
            return [g for g in mine if g.run_id == newest]
        gens = [self.from_record(r) for r in self.journal.by_name(name)]
        with self._lock:
            self.generations.extend(gens)  # tracked now: %kling wait and later look-ups see them
        return gens

    def from_record(self, record: Record) -> Generation:
        """A generation for a journal entry: its saved video, or its task tracked again."""
        gen = Generation(
            Request.from_body(record.body),
            name=record.name,
            label=record.label,
            simulated=record.identity.startswith("sim:"),
            identity=record.identity,
            run_id=record.run_id,
        )
        if record.task_id and not record.is_final and record.status != "unknown":
            return self._adopt(gen, record, "reattach", None)
        return self._adopt(gen, record, "reuse", None)

    def pending(self) -> list[Generation]:
        with self._lock:
            return [g for g in self.generations if not g.done]

    def wait_all(self, timeout: float | None = None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            gens = list(self.generations)
        for gen in gens:
            gen.wait(None if end is None else max(0.0, end - time.monotonic()))

    def __repr__(self) -> str:
        where = "simulator" if self.simulated else self.service_url
        return f"<kling_nb Runtime {where}, output_dir={self.output_dir.name!r}, {len(self.generations)} generations>"


def _secret(key: str | Secret | None) -> Secret | None:
    if key is None or isinstance(key, Secret):
        return key
    return Secret(key) if key.strip() else None
