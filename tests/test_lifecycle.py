"""The generation lifecycle: one writer, explicit states, nothing stranded.

The first three tests are the bugs that led to the redesign; each failed on the old code."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from kling_nb import parse
from kling_nb.engine import generation as generation_module
from kling_nb.engine.generation import FINAL, TRANSITIONS, Generation, IllegalTransition, State
from kling_nb.engine.journal import Journal
from kling_nb.engine.schedule import PollSchedule
from kling_nb.engine.session import Runtime
from kling_nb.engine.tracker import Backend, Tracker
from kling_nb.service.status import TaskStatus
from kling_nb.sim import SimConfig, Simulator

FAST = PollSchedule(first_s=0.2, interval_s=0.2, min_s=0.1, max_s=0.5)


@pytest.fixture
def runtime(tmp_path):
    rt = Runtime(output_dir=tmp_path / "out", schedule=FAST, sim_config=dict(queue_s=0.2, run_s=1.5))
    yield rt
    rt.close()


# -- the three bugs ----------------------------------------------------------------------------
def test_login_while_a_generation_runs_leaves_it_tracked_to_the_end(runtime):
    gen = runtime.run(parse("A lantern on a sill"))
    time.sleep(0.3)
    assert not gen.done
    runtime.set_key("sk-new-key-for-new-generations")  # the old design closed the tracker here
    assert gen.wait(30).status == State.COMPLETED and gen.video_path.exists()
    assert not runtime.simulated  # new generations would go to the service


def test_config_change_mid_run_then_wait_waits_for_the_earlier_generation(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOAPIS_API_KEY", raising=False)
    monkeypatch.delenv("TOAPIS_BASE_URL", raising=False)
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "kling_nb")
        ip.run_line_magic("config", "KlingMagics.sim_run_s = 2.0")
        ip.run_line_magic("config", "KlingMagics.poll_first_s = 0.2")
        assert ip.run_cell("%%kling --name early\nA kite over a field").success
        early = ip.user_ns["early"]
        assert not early.done
        ip.run_line_magic("config", "KlingMagics.poll_interval_s = 3")
        ip.run_line_magic("kling", "wait")  # the old design waited for nothing here
        assert early.done and early.status == State.COMPLETED
    finally:
        ip.run_line_magic("unload_ext", "kling_nb")
        InteractiveShell.clear_instance()


class _SlowToSet(threading.Event):
    """Widens the gap right after `done` is set: a reader that wakes then must already see
    every final field."""

    def set(self):
        super().set()
        time.sleep(0.3)


def test_wait_returns_only_with_every_final_field_in_place():
    gen = Generation(parse("A kite"))
    gen._done = _SlowToSet()
    gen._transition(State.QUEUED, task_id="video_1")
    video = Path("kite.mp4")
    threading.Thread(target=gen._transition, args=(State.DOWNLOADING,), kwargs={"progress": 100}).start()
    time.sleep(0.05)
    threading.Thread(target=gen._transition, args=(State.COMPLETED,), kwargs={"video_path": video}).start()
    gen.wait(5)
    assert gen.status == State.COMPLETED and gen.video_path == video and gen.progress == 100


# -- the state machine ---------------------------------------------------------------------------
def test_final_states_allow_no_transition_and_illegal_ones_raise():
    assert all(not TRANSITIONS[s] for s in FINAL)
    gen = Generation(parse("A kite"))
    gen._transition(State.SUBMITTING)
    with pytest.raises(IllegalTransition):
        gen._transition(State.UPLOADING)
    gen._transition(State.FAILED, error=None)
    with pytest.raises(IllegalTransition):
        gen._transition(State.COMPLETED)
    assert gen.status == State.FAILED and gen.done


def test_every_unfinished_state_can_end_and_be_detached():
    for state in set(State) - FINAL:
        assert {State.FAILED, State.DETACHED} <= TRANSITIONS[state] | ({state} if state == State.WAITING else set())


def test_listeners_get_immutable_snapshots_in_order():
    gen = Generation(parse("A kite"))
    seen = []
    gen.add_listener(seen.append)
    for p in (10, 50):
        gen._transition(State.IN_PROGRESS, progress=p)
    gen._transition(State.DOWNLOADING, progress=100)
    assert [s.progress for s in seen] == [10, 50, 100]
    assert [s.version for s in seen] == [1, 2, 3]
    with pytest.raises(AttributeError):
        seen[0].progress = 99  # frozen


def test_only_the_tracker_writes_generations():
    root = Path(generation_module.__file__).parents[1]
    writers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "._transition(" in p.read_text())
    assert writers == ["engine/tracker.py"]


# -- the tracker with a stand-in service (unit seam) -----------------------------------------------
class StandInService:
    """A client with random timing: each task runs a few polls, then completes or fails."""

    def __init__(self, seed=7, fail_every=9):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.polls: dict[str, int] = {}
        self.fail_every = fail_every
        self.statuses = 0
        self.looked = threading.Event()

    def _pause(self):
        with self.lock:
            delay = self.rng.uniform(0, 0.003)
        time.sleep(delay)

    def submit(self, body):
        self._pause()
        with self.lock:
            task = f"video_{len(self.polls) + 1}"
            self.polls[task] = 0
        return TaskStatus(id=task, status="queued")

    def status(self, task_id):
        self._pause()
        with self.lock:
            self.statuses += 1
            self.polls[task_id] += 1
            n = self.polls[task_id]
        self.looked.set()
        number = int(task_id.split("_")[1])
        if n < 3:
            return TaskStatus(id=task_id, status="in_progress", progress=30 * n)
        if number % self.fail_every == 0:
            return TaskStatus(id=task_id, status="failed", error_code="generation_failed", error_message="no")
        return TaskStatus(id=task_id, status="completed", progress=100, url=f"https://cdn.example/{task_id}.mp4")

    def download(self, url, dest):
        self._pause()
        Path(dest).write_bytes(b"\0\0\0\x18ftypisom" + url.encode())
        return Path(dest)

    def upload(self, path):  # pragma: no cover - no uploads in these requests
        raise AssertionError


def test_two_hundred_generations_with_random_timing_all_end_consistent(tmp_path, monkeypatch):
    class SlowReplace:  # a delay inside every transition, between reading and storing the fields
        @staticmethod
        def replace(obj, **changes):
            time.sleep(random.uniform(0, 0.001))
            return __import__("dataclasses").replace(obj, **changes)

    monkeypatch.setattr(generation_module, "dataclasses", SlowReplace)
    journal = Journal(tmp_path / "journal.sqlite")
    service = StandInService()
    backend = Backend(service, journal, tmp_path, schedule=PollSchedule(0.01, 0.01, 0.01, 0.0, 0.05))
    tracker = Tracker(workers=8)
    gens = []
    try:
        for i in range(200):
            gen = Generation(parse(f"shot {i}"), name=f"s{i}")
            _, record = journal.begin(f"id-{i}", gen.request.body, name=gen.name)
            tracker.start(gen, backend, record.id)
            gens.append(gen)
        for gen in gens:
            s = gen.wait(120).snapshot()
            assert s.status in (State.COMPLETED, State.FAILED), s
            if s.status == State.COMPLETED:
                assert s.video_path.exists() and s.progress == 100 and s.task_id and s.error is None
            else:
                assert s.error is not None and "no" in s.error.message and s.video_path is None
    finally:
        tracker.close()
        journal.close()
    failed = [g for g in gens if g.status == State.FAILED]
    assert len(failed) == 200 // 9  # exactly the tasks the stand-in failed
    assert journal_statuses(tmp_path) == {"completed": 200 - len(failed), "failed": len(failed)}


def journal_statuses(folder):
    j = Journal(folder / "journal.sqlite")
    try:
        counts: dict[str, int] = {}
        for r in j.history(1000):
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts
    finally:
        j.close()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_first_status_look_waits_for_the_vendor_first_look_on_the_tracker_clock(tmp_path):
    clock = FakeClock()
    journal = Journal(tmp_path / "journal.sqlite")
    service = StandInService()
    tracker = Tracker(workers=2, clock=clock)
    try:
        gen = Generation(parse("A kite"))
        queued = threading.Event()
        gen.add_listener(lambda s: s.status == State.QUEUED and queued.set())
        _, record = journal.begin("id", gen.request.body)
        tracker.start(gen, Backend(service, journal, tmp_path), record.id)  # default schedule: vendor's 5 s
        assert queued.wait(10)
        polls = [due for due, _, job, _ in tracker._due if job.__name__ == "_poll"]
        assert polls == [1005.0]  # due on the tracker's clock, not wall time
        clock.now = 1004.9
        tracker.wake()
        assert not service.looked.wait(0.3) and service.statuses == 0
        clock.now = 1005.0
        tracker.wake()
        assert service.looked.wait(10)
    finally:
        tracker.close()
        journal.close()


# -- the session's money decision -------------------------------------------------------------
@pytest.fixture
def sim():
    with Simulator(config=SimConfig(queue_s=0.2, run_s=1.0)) as s:
        yield s


def keyed_runtime(sim, folder, **kw):
    return Runtime(output_dir=folder, base_url=sim.base_url, api_key="sk-test", schedule=FAST, **kw)


def test_the_same_request_again_is_reused_and_sends_nothing(sim, tmp_path):
    rt = keyed_runtime(sim, tmp_path)
    try:
        first = rt.run(parse("A red kite")).wait(30)
        again = rt.run(parse("A red kite")).wait(30)
        assert first.status == again.status == State.COMPLETED
        assert again.origin == "reused" and again.video_path == first.video_path
        assert sim.count("submit") == 1
    finally:
        rt.close()


def test_a_failed_request_is_submitted_again_by_a_rerun(sim, tmp_path):
    rt = keyed_runtime(sim, tmp_path)
    try:
        assert rt.run(parse("sim:fail a kite")).wait(30).status == State.FAILED
        assert rt.run(parse("sim:fail a kite")).wait(30).status == State.FAILED
        assert sim.count("submit") == 2
    finally:
        rt.close()


def test_a_submit_under_way_in_another_kernel_is_awaited_not_resent(sim, tmp_path, monkeypatch):
    rt = keyed_runtime(sim, tmp_path)
    try:
        request = parse("A blue kite")
        other = Journal(tmp_path / "journal.sqlite")  # the other kernel
        _, row = other.begin(rt.identity(request), request.body)
        gen = rt.run(request)
        assert gen.status == State.SUBMITTING and gen.snapshot().waiting_for
        from kling_nb.service.client import Client

        with Client(sim.base_url, "sk-test") as client:  # the other kernel's submit lands
            other.set_task(row.id, client.submit(request.body))
        assert gen.wait(30).status == State.COMPLETED
        assert sim.count("submit") == 1
        other.close()
    finally:
        rt.close()


def test_a_stale_submit_of_another_kernel_is_unknown_and_never_resent(sim, tmp_path, monkeypatch):
    from kling_nb.engine import tracker as tracker_module

    monkeypatch.setattr(tracker_module, "FRESH_SUBMIT_S", 0.5)
    rt = keyed_runtime(sim, tmp_path)
    try:
        request = parse("A green kite")
        other = Journal(tmp_path / "journal.sqlite")
        other.begin(rt.identity(request), request.body)
        gen = rt.run(request).wait(30)
        assert gen.status == State.UNKNOWN and "--force" in gen.error.message
        assert sim.count("submit") == 0
        other.close()
    finally:
        rt.close()


def test_a_heartbeat_keeps_a_slow_submit_fresh_for_other_kernels(tmp_path, monkeypatch):
    from kling_nb.engine import tracker as tracker_module

    monkeypatch.setattr(tracker_module, "HEARTBEAT_S", 0.1)
    release = threading.Event()

    class SlowSubmit(StandInService):
        def submit(self, body):  # a submit backing off from 429s for a while
            release.wait(10)
            return super().submit(body)

    journal = Journal(tmp_path / "journal.sqlite")
    tracker = Tracker(workers=4)
    try:
        gen = Generation(parse("A kite"))
        _, record = journal.begin("id", gen.request.body)
        tracker.start(gen, Backend(SlowSubmit(), journal, tmp_path, schedule=FAST), record.id)
        first = journal.get(record.id).updated_at
        deadline = time.monotonic() + 10
        while journal.get(record.id).updated_at == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert journal.get(record.id).updated_at > first and journal.get(record.id).status == "submitting"
        release.set()
        assert gen.wait(30).status in FINAL
    finally:
        release.set()
        tracker.close()
        journal.close()


# -- reading has no side effects -----------------------------------------------------------------
def test_reading_settings_and_a_dry_run_start_nothing(tmp_path):
    rt = Runtime(output_dir=tmp_path, environ={})
    assert rt.simulated and rt.service_url == "https://toapis.com"
    assert "not started" in rt.base_url
    assert rt.simulator is None and rt._tracker is None
    rt.close()


def test_with_a_key_the_simulator_libraries_are_never_imported(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'kling_nb')\n"
        "assert ip.run_cell('%%kling --dry-run\\nmode: pro\\n---\\nA kite').success\n"
        "ip.run_line_magic('kling', 'status')\n"
        "print('LOADED', sorted(m for m in ('av', 'numpy', 'PIL') if m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "TOAPIS_API_KEY": "sk-test-key", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout
    assert "curl" in out.stdout and "https://toapis.com/v1/videos/generations" in out.stdout
