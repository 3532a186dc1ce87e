"""The tracker's transitions at their edges (gaps found by mutation testing, `make mutate`): a task
picked up again by another kernel, a saved result fetched again, a key refused mid-run, a
simulated task lost with its simulator, failures recorded as they happened, and another
kernel's submit watched to its end."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kling_nb import parse
from kling_nb.engine import tracker as tracker_module
from kling_nb.engine.generation import Generation, State
from kling_nb.engine.journal import Journal
from kling_nb.engine.schedule import PollSchedule
from kling_nb.engine.tracker import Backend, Tracker
from kling_nb.errors import (
    AuthError,
    ContentPolicyError,
    KlingError,
    NotFoundError,
    QuotaError,
    SubmitUnknownError,
)
from kling_nb.service.status import TaskStatus

FAST = PollSchedule(first_s=0.01, interval_s=0.01, min_s=0.01, margin_s=0.0, max_s=0.05)
VIDEO = b"\0\0\0\x18ftypisom" + b"\0" * 64


class Service:
    """A stand-in client: tasks run `polls` looks, then complete; any call can be made to fail."""

    def __init__(self, polls=2, submit_error=None, status_error=None):
        self.polls: dict[str, int] = {}
        self.n = polls
        self.submit_error = submit_error
        self.status_error = status_error
        self.submitted: list[dict] = []
        self.downloads: list[str] = []
        self.lock = threading.Lock()

    def submit(self, body):
        if self.submit_error is not None:
            raise self.submit_error
        with self.lock:
            self.submitted.append(body)
            task = f"video_{len(self.submitted)}"
            self.polls[task] = 0
        return TaskStatus(id=task, status="queued")

    def status(self, task_id):
        error = self.status_error(task_id) if callable(self.status_error) else self.status_error
        if error is not None:
            raise error
        with self.lock:
            self.polls[task_id] = self.polls.get(task_id, 0) + 1
            n = self.polls[task_id]
        if n < self.n:
            return TaskStatus(id=task_id, status="in_progress", progress=50)
        return TaskStatus(id=task_id, status="completed", progress=100, url=f"https://cdn.example/{task_id}.mp4")

    def download(self, url, dest):
        self.downloads.append(url)
        Path(dest).write_bytes(VIDEO)
        return Path(dest)


@pytest.fixture
def world(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    tracker = Tracker(workers=4)
    yield journal, tracker, tmp_path
    tracker.close()
    journal.close()


def watched(gen: Generation) -> list:
    seen: list = []
    gen.add_listener(seen.append)
    return seen


def test_a_task_in_flight_is_picked_up_where_the_journal_left_it(world):
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body, name="kite")
    record = journal.record_status(record.id, TaskStatus(id="video_9", status="in_progress", progress=40))
    service = Service(polls=2)
    gen = Generation(request, name="kite")
    seen = watched(gen)
    tracker.attach(gen, Backend(service, journal, folder, schedule=FAST), record)
    first = seen[0]
    assert (first.status, first.task_id, first.progress, first.origin) == (
        State.IN_PROGRESS,
        "video_9",
        40,
        "reattached",
    )
    assert (first.service_status, first.body) == ("in_progress", request.body)
    assert gen.wait(10).status == State.COMPLETED and gen.video_path.read_bytes() == VIDEO
    assert service.submitted == [] and service.polls["video_9"] == 2


def test_a_queued_task_is_picked_up_as_queued(world):
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    record = journal.record_status(record.id, TaskStatus(id="video_9", status="submitted"))
    gen = Generation(request)
    seen = watched(gen)
    tracker.attach(gen, Backend(Service(), journal, folder, schedule=FAST), record, origin="resumed")
    assert (seen[0].status, seen[0].origin, seen[0].service_status) == (State.QUEUED, "resumed", "submitted")
    assert gen.wait(10).status == State.COMPLETED


def test_a_saved_result_whose_file_is_gone_is_fetched_again(world):
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body, name="kite")
    record = journal.record_status(
        record.id,
        TaskStatus(id="video_3", status="completed", progress=100, url="https://cdn.example/v3.mp4", expires_at=4e9),
    )
    service = Service()
    gen = Generation(request, name="kite")
    seen = watched(gen)
    tracker.fetch(gen, Backend(service, journal, folder, schedule=FAST), record)
    first = seen[0]
    assert (first.status, first.progress, first.task_id, first.origin) == (State.DOWNLOADING, 100, "video_3", "reused")
    assert (first.url, first.expires_at, first.body) == ("https://cdn.example/v3.mp4", 4e9, request.body)
    assert gen.wait(10).status == State.COMPLETED and service.downloads == ["https://cdn.example/v3.mp4"]
    assert journal.get(record.id).video_path == gen.video_path.name and service.submitted == []


def test_a_key_refused_while_polling_detaches_and_keeps_the_task_resumable(world):
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    record = journal.record_status(record.id, TaskStatus(id="video_9", status="in_progress", progress=40))
    refused = AuthError("the key was revoked", status=401, code="invalid_key")
    gen = Generation(request)
    tracker.attach(gen, Backend(Service(status_error=refused), journal, folder, schedule=FAST), record)
    assert gen.wait(10).status == State.DETACHED and gen.error is refused
    saved = journal.get(record.id)
    assert (saved.status, saved.error_code, saved.error_message) == ("in_progress", "invalid_key", refused.message)
    assert [r.id for r in journal.pending()] == [record.id]  # %kling resume picks it up


def test_a_simulated_task_lost_with_its_simulator_is_started_again(world):
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("sim:id", request.body, name="kite", label={"mode": "std"}, run_id="run-1")
    record = journal.record_status(record.id, TaskStatus(id="video_old", status="in_progress", progress=40))
    gone = NotFoundError("no such task", status=404)
    service = Service(status_error=lambda task: gone if task == "video_old" else None)
    gen = Generation(request, name="kite", label={"mode": "std"}, simulated=True, identity="sim:id", run_id="run-1")
    seen = watched(gen)
    tracker.attach(gen, Backend(service, journal, folder, schedule=FAST), record)
    assert gen.wait(10).status == State.COMPLETED and service.submitted == [request.body]
    restarted = [s for s in seen if s.origin == "restarted"]
    assert (restarted[0].status, restarted[0].task_id, restarted[0].progress) == (State.SUBMITTING, None, 0)
    old = journal.get(record.id)
    assert (old.status, old.error_code, old.error_message) == (
        "failed",
        "simulator_restarted",
        "the simulator that ran this task has stopped",
    )
    (new,) = [r for r in journal.history() if r.id != record.id]
    assert (new.identity, new.name, new.label, new.run_id, new.task_id) == (
        "sim:id",
        "kite",
        {"mode": "std"},
        "run-1",
        "video_1",
    )
    assert new.body == request.body and gen.task_id == "video_1"


def test_a_real_task_the_service_no_longer_knows_fails(world):
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    record = journal.record_status(record.id, TaskStatus(id="video_old", status="in_progress"))
    gone = NotFoundError("no such task", status=404, code="not_found")
    gen = Generation(request, identity="id")
    tracker.attach(gen, Backend(Service(status_error=gone), journal, folder, schedule=FAST), record)
    assert gen.wait(10).status == State.FAILED and gen.error is gone
    saved = journal.get(record.id)
    assert (saved.status, saved.error_code, saved.error_message) == ("failed", "not_found", gone.message)


# -- failures, recorded as they happened ---------------------------------------------------------
def start(world, service, text="A kite"):
    journal, tracker, folder = world
    request = parse(text)
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    seen = watched(gen)
    tracker.start(gen, Backend(service, journal, folder, schedule=FAST), record.id)
    gen.wait(10)
    return gen, journal.get(record.id), seen


def test_a_refused_submit_fails_and_the_journal_says_why(world):
    refused = ContentPolicyError("not allowed", status=422, code="content_policy_violation")
    gen, saved, seen = start(world, Service(submit_error=refused))
    assert gen.status == State.FAILED and gen.error is refused and seen[-1].waiting_for is None
    assert (saved.status, saved.error_code, saved.error_message) == (
        "failed",
        "content_policy_violation",
        refused.message,
    )


def test_a_submit_without_an_answer_is_unknown_in_the_journal_too(world):
    lost = SubmitUnknownError("the connection dropped; it may have been billed")
    gen, saved, _ = start(world, Service(submit_error=lost))
    assert gen.status == State.UNKNOWN and gen.error is lost
    assert (saved.status, saved.error_code, saved.error_message) == ("unknown", "submit_unknown", lost.message)


def test_a_quota_refusal_says_nothing_was_billed_and_keeps_the_services_code(world):
    refused = QuotaError("insufficient quota", status=402, code="insufficient_quota", type="quota")
    gen, saved, _ = start(world, Service(submit_error=refused))
    assert isinstance(gen.error, QuotaError) and (gen.error.status, gen.error.code, gen.error.type) == (
        402,
        "insufficient_quota",
        "quota",
    )
    assert "this key's quota is used up (insufficient quota)" in gen.error.message
    assert (saved.status, saved.error_code, saved.error_message) == ("failed", "insufficient_quota", gen.error.message)


def test_an_expired_url_fails_the_download_but_keeps_the_completed_task(world, monkeypatch):
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    record = journal.record_status(
        record.id,
        TaskStatus(id="video_3", status="completed", progress=100, url="https://cdn.example/v3.mp4", expires_at=5.0),
    )
    gen = Generation(request)
    tracker.fetch(gen, Backend(Service(), journal, folder, schedule=FAST), record)
    assert gen.wait(10).status == State.FAILED
    saved = journal.get(record.id)
    assert saved.status == "completed" and "expired" in saved.error_message


# -- another kernel's submit ----------------------------------------------------------------------
def test_another_kernels_submit_is_followed_from_the_moment_its_task_appears(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    clock = [100.0]
    tracker = Tracker(workers=2, clock=lambda: clock[0])
    try:
        request = parse("A kite")
        _, record = journal.begin("id", request.body)
        gen = Generation(request)
        seen = watched(gen)
        tracker.await_submit(gen, Backend(Service(polls=99), journal, tmp_path, schedule=FAST), record)
        assert (seen[0].status, seen[0].origin, seen[0].body) == (State.SUBMITTING, "reattached", request.body)
        assert seen[0].waiting_for == "another kernel's submit of this request"
        journal.record_status(record.id, TaskStatus(id="video_7", status="in_progress", progress=30))
        # The first look may already have run (and found no task yet): move the tracker's clock
        # past the next look so it is due, whichever happened.
        clock[0] += tracker_module.OTHER_SUBMIT_LOOK_S + 0.01
        tracker.wake()
        stop = threading.Event()
        for _ in range(500):
            if any(s.task_id for s in seen) or stop.wait(0.02):
                break
        picked = next(s for s in seen if s.task_id)
        assert (picked.status, picked.task_id, picked.progress, picked.waiting_for) == (
            State.IN_PROGRESS,
            "video_7",
            30,
            None,
        )
    finally:
        tracker.close()
        journal.close()


def test_another_kernels_submit_exactly_as_old_as_the_limit_is_unknown(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite", clock=lambda: 1000.0)
    tracker = Tracker(workers=2, wall_clock=lambda: 1000.0 + tracker_module.FRESH_SUBMIT_S)
    try:
        request = parse("A kite")
        _, record = journal.begin("id", request.body)
        gen = Generation(request)
        tracker.await_submit(gen, Backend(Service(), journal, tmp_path, schedule=FAST), record)
        assert gen.wait(10).status == State.UNKNOWN and gen.snapshot().waiting_for is None
        assert gen.error.message == (
            "an earlier submit of this exact request got no answer (the kernel stopped, or the connection "
            "dropped), so it may have been accepted and billed. Check your dashboard; re-run with --force to "
            "submit it again."
        )
    finally:
        tracker.close()
        journal.close()


# -- films --------------------------------------------------------------------------------------
def test_a_film_of_a_clip_that_failed_is_not_made(world):
    journal, tracker, folder = world
    clip = Generation(parse("A kite"), name="shot1")
    clip._transition(State.FAILED, error=KlingError("no"))
    film = Generation(parse("film"), name="tale", identity="film:x")
    _, record = journal.begin("film:x", {"prompt": "shot1"}, waiting=True)
    tracker.stitch(film, Backend(Service(), journal, folder, schedule=FAST), record.id, {"shot1": clip})
    assert film.wait(10).status == State.FAILED
    assert film.error.message == "shot1 (failed) did not complete, so the film was not made"
    assert journal.get(record.id).status == "failed"


# -- one generation, every step ---------------------------------------------------------------------
class Steps(Service):
    """Queued, then two looks in progress (30 %, 60 %), then completed with a URL and a thumbnail; the
    video it saves is a real clip, so a poster can be made from it."""

    def __init__(self, video: bytes, **kw):
        super().__init__(polls=3, **kw)
        self.video = video

    def status(self, task_id):
        with self.lock:
            self.polls[task_id] = self.polls.get(task_id, 0) + 1
            n = self.polls[task_id]
        if n < 3:
            return TaskStatus(id=task_id, status="in_progress", progress=30 * n)
        task = TaskStatus(
            id=task_id, status="completed", progress=100, url=f"https://cdn.example/{task_id}.mp4", expires_at=4e9
        )
        object.__setattr__(task, "thumbnail_url", "https://cdn.example/thumb.jpg")
        return task

    def download(self, url, dest):
        self.downloads.append(url)
        Path(dest).write_bytes(self.video)
        return Path(dest)


@pytest.fixture(scope="module")
def clip() -> bytes:
    from .hostile_server import tiny_mp4

    return tiny_mp4()


def test_every_step_of_a_generation_carries_what_the_service_said(world, clip):
    import hashlib

    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body, name="kite")
    gen = Generation(request, name="kite")
    seen = watched(gen)
    tracker.start(gen, Backend(Steps(clip), journal, folder, schedule=FAST), record.id)
    assert gen.wait(10).status == State.COMPLETED
    steps = [(s.status, s.progress, s.task_id, s.service_status) for s in seen]
    assert steps[0] == (State.SUBMITTING, 0, None, None) and seen[0].body == request.body
    assert (State.QUEUED, 0, "video_1", "queued") in steps
    assert (State.IN_PROGRESS, 30, "video_1", "in_progress") in steps
    assert (State.IN_PROGRESS, 60, "video_1", "in_progress") in steps
    downloading = next(s for s in seen if s.status == State.DOWNLOADING)
    assert (downloading.progress, downloading.task_id, downloading.service_status) == (100, "video_1", "completed")
    assert (downloading.url, downloading.expires_at) == ("https://cdn.example/video_1.mp4", 4e9)
    assert downloading.thumbnail_url == "https://cdn.example/thumb.jpg"
    done = seen[-1]
    assert (done.status, done.progress) == (State.COMPLETED, 100)
    assert done.video_path.name == "kite-video_1.mp4" and done.video_path.read_bytes() == clip
    assert done.poster_path is not None and done.poster_path.is_file()
    saved = journal.get(record.id)
    assert saved.video_path == "kite-video_1.mp4" and saved.video_sha256 == hashlib.sha256(clip).hexdigest()


def test_a_failed_task_carries_the_services_words_and_where_it_stopped(world):
    class Fails(Service):
        def status(self, task_id):
            return TaskStatus(id=task_id, status="failed", progress=70, error_code="risk_control", error_message=None)

    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    tracker.start(gen, Backend(Fails(), journal, folder, schedule=FAST), record.id)
    s = gen.wait(10).snapshot()
    assert (s.status, s.progress, s.task_id, s.service_status) == (State.FAILED, 70, "video_1", "failed")
    assert (s.error.message, s.error.code, s.error.task_id) == (
        "risk_control: the service reported the generation failed",
        "risk_control",
        "video_1",
    )


def test_a_completed_task_without_a_url_is_looked_at_again_backing_off_then_left(world):
    class NoUrl(Service):
        def status(self, task_id):
            with self.lock:
                self.polls[task_id] = self.polls.get(task_id, 0) + 1
            return TaskStatus(id=task_id, status="completed", progress=100)

    journal, tracker, folder = world
    delays: list[float] = []
    real = tracker._schedule

    def schedule(job, entry, delay):
        if job.__name__ == "_poll":
            delays.append(delay)
        real(job, entry, delay)

    tracker._schedule = schedule
    service = NoUrl()
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    seen = watched(gen)
    schedule_ = PollSchedule(first_s=0.001, interval_s=0.01, min_s=0.001, margin_s=0.0, max_s=0.01)
    tracker.start(gen, Backend(service, journal, folder, schedule=schedule_), record.id)
    assert gen.wait(10).status == State.DETACHED
    assert service.polls["video_1"] == tracker_module.NO_URL_LOOKS + 1 and service.submitted == [request.body]
    waiting = [s for s in seen if s.status == State.IN_PROGRESS]
    assert {(s.progress, s.task_id, s.service_status) for s in waiting} == {(100, "video_1", "completed")}
    assert delays[1:] == [0.002, 0.004, 0.008, 0.01, 0.01]  # after the first look: doubling, capped at max_s
    assert gen.error.message == (
        "the service reports task video_1 completed but gives no video URL; nothing was submitted again: "
        "re-run the cell or `%kling resume` later to look again"
    )


def test_polling_stops_once_past_the_deadline_and_not_at_it(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    clock = [1000.0]
    tracker = Tracker(workers=2, clock=lambda: clock[0])
    try:
        service = Service(polls=99)
        request = parse("A kite")
        _, record = journal.begin("id", request.body)
        record = journal.record_status(record.id, TaskStatus(id="video_9", status="in_progress", progress=10))
        gen = Generation(request)
        backend = Backend(service, journal, tmp_path, schedule=FAST, deadline_s=5.0)
        tracker.attach(gen, backend, record)  # started at 1000
        deadline = threading.Event()
        while service.polls.get("video_9", 0) < 1 and not deadline.wait(0.02):
            pass
        clock[0] = 1005.0  # exactly at the deadline: still looked at
        tracker.wake()
        while service.polls.get("video_9", 0) < 2 and not deadline.wait(0.02):
            pass
        assert not gen.done
        clock[0] = 1005.5
        tracker.wake()
        assert gen.wait(10).status == State.DETACHED
        assert gen.error.message == (
            "stopped waiting after 5 s; the generation goes on: re-run the cell or `%kling resume` to pick it up again"
        )
    finally:
        tracker.close()
        journal.close()


def test_a_status_outage_is_logged_and_looked_at_again(world, caplog):
    import logging

    from kling_nb.errors import TransportError

    outages = [TransportError("status: the connection dropped before the reply")] * 2

    class Flaky(Service):
        def status(self, task_id):
            if outages:
                raise outages.pop()
            return super().status(task_id)

    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    with caplog.at_level(logging.WARNING, logger="kling_nb.tracker"):
        tracker.start(gen, Backend(Flaky(polls=1), journal, folder, schedule=FAST), record.id)
        assert gen.wait(10).status == State.COMPLETED
    assert "status of video_1 unavailable: status: the connection dropped before the reply" in caplog.messages


# -- downloads -------------------------------------------------------------------------------------
def completed_record(journal, expires_at):
    request = parse("A kite")
    _, record = journal.begin("id", request.body, name="kite")
    record = journal.record_status(
        record.id,
        TaskStatus(
            id="video_3", status="completed", progress=100, url="https://cdn.example/v3.mp4", expires_at=expires_at
        ),
    )
    return request, record


def test_a_url_expiring_exactly_now_is_expired_and_says_when(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    tracker = Tracker(workers=2, wall_clock=lambda: 5000.0)
    try:
        request, record = completed_record(journal, 5000.0)
        service = Service()
        gen = Generation(request, name="kite")
        tracker.fetch(gen, Backend(service, journal, tmp_path, schedule=FAST), record)
        assert gen.wait(10).status == State.FAILED and service.downloads == []
        assert gen.error.message == (
            "the video of task video_3 was not saved locally and its URL expired at 1970-01-01 01:23 UTC; it is gone "
            "from the service. Re-run with --force to generate it again (billed again)."
        )
        saved = journal.get(record.id)
        assert saved.status == "completed" and saved.error_message == gen.error.message
    finally:
        tracker.close()
        journal.close()


@pytest.mark.parametrize("gone", [True, False])
def test_a_download_that_fails_keeps_the_completed_task_in_the_journal(world, gone):
    from kling_nb.errors import ExpiredError, TransportError

    error = ExpiredError("the video URL answered HTTP 410") if gone else TransportError("could not download")

    class Refuses(Service):
        def download(self, url, dest):
            raise error

    journal, tracker, folder = world
    request, record = completed_record(journal, 4e9)
    gen = Generation(request, name="kite")
    tracker.fetch(gen, Backend(Refuses(), journal, folder, schedule=FAST), record)
    assert gen.wait(10).status == (State.FAILED if gone else State.DETACHED) and gen.error is error
    saved = journal.get(record.id)
    assert (saved.status, saved.error_message) == ("completed", error.message)


# -- films ----------------------------------------------------------------------------------------
def finished_clip(folder, name, data) -> Generation:
    path = folder / f"{name}.mp4"
    path.write_bytes(data)
    gen = Generation(parse(name), name=name)
    gen._transition(State.DOWNLOADING, progress=100)
    gen._transition(State.COMPLETED, video_path=path)
    return gen


def test_a_film_is_cut_from_its_clips_named_after_it_and_recorded(world, clip):
    import hashlib

    journal, tracker, folder = world
    clips = {"shot1": finished_clip(folder, "shot1", clip), "shot2": finished_clip(folder, "shot2", clip)}
    film = Generation(parse("film"), name="tale", identity="film:" + "0123456789abcdef")
    seen = watched(film)
    _, record = journal.begin(film.identity, {"prompt": "shot1 + shot2"}, waiting=True)
    tracker.stitch(film, Backend(Service(), journal, folder, schedule=FAST), record.id, clips)
    done = film.wait(30).snapshot()
    assert (done.status, done.progress, done.waiting_for) == (State.COMPLETED, 100, None)
    assert seen[0].waiting_for == "shot1, shot2"
    assert done.video_path.name == "tale-film-456789abcdef.mp4" and done.poster_path.is_file()
    saved = journal.get(record.id)
    assert saved.video_path == done.video_path.name
    assert saved.video_sha256 == hashlib.sha256(done.video_path.read_bytes()).hexdigest()


# -- submits ---------------------------------------------------------------------------------------
def test_a_local_image_is_uploaded_first_and_its_url_sent(world):
    journal, tracker, folder = world
    (folder / "red.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    request = parse("images: [red.png]\n---\n<<<image_1>>> waves", base_dir=folder)

    class Uploads(Service):
        def upload(self, path):
            self.uploaded = Path(path).name
            return "https://cdn.example/red.png"

    service = Uploads()
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    seen = watched(gen)
    tracker.start(gen, Backend(service, journal, folder, schedule=FAST), record.id)
    assert gen.wait(10).status == State.COMPLETED
    assert service.uploaded == "red.png"
    assert service.submitted[0]["metadata"]["image_list"] == [{"image_url": "https://cdn.example/red.png"}]
    assert [s.status for s in seen][:2] == [State.UPLOADING, State.SUBMITTING]
    assert seen[0].waiting_for is None and seen[1].body == service.submitted[0]
    assert journal.upload_url(request.uploads[0].sha256) == "https://cdn.example/red.png"


def test_a_story_shot_claimed_by_another_kernel_is_followed_not_sent(world):
    journal, tracker, folder = world
    shot1 = finished_clip(folder, "shot1", VIDEO)
    request = parse("A kite")
    _, record = journal.begin("shot2", request.body, waiting=True)
    assert journal.claim(record.id)  # the other kernel got there first
    gen = Generation(request)
    seen = watched(gen)
    service = Service()
    tracker.start(gen, Backend(service, journal, folder, schedule=FAST), record.id, upstream={"shot1": shot1})
    deadline = threading.Event()
    while not any(s.waiting_for == "another kernel's submit of this request" for s in seen) and not deadline.wait(0.02):
        pass
    following = next(s for s in seen if s.waiting_for == "another kernel's submit of this request")
    assert following.status == State.SUBMITTING
    journal.record_status(record.id, TaskStatus(id="video_5", status="in_progress", progress=20))
    assert gen.wait(10).status == State.COMPLETED and service.submitted == []


def test_the_heartbeat_stops_once_the_submit_is_answered(world, monkeypatch):
    import time

    monkeypatch.setattr(tracker_module, "HEARTBEAT_S", 0.02)
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    tracker.start(gen, Backend(Service(polls=1), journal, folder, schedule=FAST), record.id)
    assert gen.wait(10).status == State.COMPLETED
    before = journal.get(record.id).updated_at
    time.sleep(0.2)
    assert journal.get(record.id).updated_at == before


def test_a_task_another_kernel_finished_is_looked_at_at_once(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    clock = [100.0]
    tracker = Tracker(workers=2, clock=lambda: clock[0])
    try:
        request = parse("A kite")
        _, record = journal.begin("id", request.body)
        journal.record_status(record.id, TaskStatus(id="video_7", status="in_progress", progress=30))
        service = Service(polls=99)
        gen = Generation(request)
        tracker.await_submit(gen, Backend(service, journal, tmp_path, schedule=FAST), record)
        deadline = threading.Event()
        while service.polls.get("video_7", 0) < 1 and not deadline.wait(0.02):
            pass
        assert service.polls.get("video_7", 0) >= 1  # the clock never moved: the look was due at once
    finally:
        tracker.close()
        journal.close()


# -- fourth round ----------------------------------------------------------------------------------
def wait_until(predicate, seconds=10.0):
    """True as soon as `predicate()` holds; its last value after `seconds`."""
    end = time.monotonic() + seconds
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return predicate()


def test_a_look_that_expects_the_end_and_misses_backs_off(tmp_path):
    """progress 50 at t=1, 90 at t=11 (the end predicted for 13.5), still 100 % but not done at 13.5:
    the next look comes after min_s * 2 (one miss), not at once."""
    answers = iter(
        [
            TaskStatus(id="video_1", status="in_progress", progress=50),
            TaskStatus(id="video_1", status="in_progress", progress=90),
            TaskStatus(id="video_1", status="in_progress", progress=100),
        ]
    )

    class Scripted(Service):
        def status(self, task_id):
            with self.lock:
                self.polls[task_id] = self.polls.get(task_id, 0) + 1
            return next(answers)

    journal = Journal(tmp_path / "journal.sqlite")
    clock = [0.0]
    tracker = Tracker(workers=2, clock=lambda: clock[0])
    schedule = PollSchedule(first_s=1, interval_s=10, min_s=0.5, margin_s=0.0, max_s=30)
    try:
        service = Scripted()
        request = parse("A kite")
        _, record = journal.begin("id", request.body)
        gen = Generation(request)
        tracker.start(gen, Backend(service, journal, tmp_path, schedule=schedule), record.id)

        def next_look():
            return sorted(due for due, _, job, _ in tracker._due if job.__name__ == "_poll")

        for now, expected in ((1.0, [11.0]), (11.0, [13.5]), (13.5, [14.5])):
            assert wait_until(lambda now=now: next_look() != [] and next_look()[0] >= now), next_look()
            clock[0] = now
            tracker.wake()
            assert wait_until(lambda expected=expected: next_look() == expected), (now, next_look())
    finally:
        tracker.close()
        journal.close()


@pytest.mark.parametrize("status", ["failed", "completed"])
def test_a_submit_answered_with_a_finished_task_keeps_its_id(world, status):
    class Instant(Service):
        def submit(self, body):
            self.submitted.append(body)
            return TaskStatus(
                id="video_77", status=status, progress=100, url="https://cdn.example/v77.mp4", error_message="no"
            )

    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body, name="kite")
    gen = Generation(request, name="kite")
    tracker.start(gen, Backend(Instant(), journal, folder, schedule=FAST), record.id)
    s = gen.wait(10).snapshot()
    assert s.task_id == "video_77"
    if status == "completed":
        assert s.video_path.name == "kite-video_77.mp4"


class BrokenJournal(Journal):
    def record_error(self, *args, **kwargs):
        raise RuntimeError("the disk went away")

    def mark_unknown(self, *args, **kwargs):
        raise RuntimeError("the disk went away")


@pytest.mark.parametrize("refusal", ["detach", "fail"])
def test_a_journal_that_cannot_record_an_error_is_logged_and_the_generation_still_ends(tmp_path, caplog, refusal):
    import logging

    journal = BrokenJournal(tmp_path / "journal.sqlite")
    tracker = Tracker(workers=2)
    try:
        request = parse("A kite")
        _, record = journal.begin("id", request.body)
        record = journal.record_status(record.id, TaskStatus(id="video_9", status="in_progress"))
        error = AuthError("revoked", status=401) if refusal == "detach" else NotFoundError("gone", status=404)
        gen = Generation(request)
        with caplog.at_level(logging.ERROR, logger="kling_nb.tracker"):
            tracker.attach(gen, Backend(Service(status_error=error), journal, tmp_path, schedule=FAST), record)
            assert gen.wait(10).status == (State.DETACHED if refusal == "detach" else State.FAILED)
        assert "could not record an error in the journal" in caplog.messages
    finally:
        tracker.close()
        journal.close()


def test_a_shot_whose_earlier_shot_failed_fails_and_waits_no_more(world):
    journal, tracker, folder = world
    shot1 = Generation(parse("A kite"), name="shot1")
    shot1._transition(State.FAILED, error=KlingError("no"))
    request = parse("A kite")
    _, record = journal.begin("shot2", request.body, waiting=True)
    gen = Generation(request)
    seen = watched(gen)
    service = Service()
    tracker.start(gen, Backend(service, journal, folder, schedule=FAST), record.id, upstream={"shot1": shot1})
    s = gen.wait(10).snapshot()
    assert seen[0].waiting_for == "shot1"
    assert (s.status, s.waiting_for) == (State.FAILED, None) and service.submitted == []
    assert s.error.message == "shot1 (failed) did not complete, so nothing was sent for this generation"


def test_a_quota_refusal_says_how_many_credits_are_left(world):
    class Meter:
        def before_submit(self):
            pass

        def charged(self, body):
            pass

        def reading(self, fresh=False):
            return type("Balance", (), {"remaining_credits": 12.5})()

    refused = QuotaError("insufficient quota", status=402, code="insufficient_quota")
    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    backend = Backend(Service(submit_error=refused), journal, folder, schedule=FAST, meter=Meter())
    tracker.start(gen, backend, record.id)
    assert gen.wait(10).status == State.FAILED
    assert " It has 12.5 credits left (%kling balance)." in gen.error.message


@pytest.mark.parametrize("text", ["boom", "x" * 300])
def test_a_bug_in_a_background_job_detaches_saying_so(world, caplog, text):
    import logging

    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    with caplog.at_level(logging.ERROR, logger="kling_nb.tracker"):
        tracker.start(gen, Backend(Service(submit_error=RuntimeError(text)), journal, folder, schedule=FAST), record.id)
        assert gen.wait(10).status == State.DETACHED
    assert gen.error.message == (
        f"internal error while tracking (RuntimeError: {text[:200]}); the task goes on: "
        "re-run the cell or `%kling resume` to pick it up"
    )
    assert "kling_nb background job failed" in caplog.messages


def test_a_film_without_a_name_is_called_film(world, clip):
    journal, tracker, folder = world
    clips = {"shot1": finished_clip(folder, "shot1", clip)}
    film = Generation(parse("film"), identity="film:abcdefabcdef0123")
    _, record = journal.begin(film.identity, {"prompt": "shot1"}, waiting=True)
    tracker.stitch(film, Backend(Service(), journal, folder, schedule=FAST), record.id, clips)
    assert film.wait(30).video_path.name == "film-film-efabcdef0123.mp4"  # the identity's last 12 characters


def test_a_story_shot_with_a_local_image_stops_waiting_when_it_uploads(world):
    journal, tracker, folder = world
    (folder / "red.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    shot1 = finished_clip(folder, "shot1", VIDEO)
    request = parse("images: [red.png]\n---\n<<<image_1>>> waves", base_dir=folder)

    class Uploads(Service):
        def upload(self, path):
            return "https://cdn.example/red.png"

    _, record = journal.begin("shot2", request.body, waiting=True)
    gen = Generation(request)
    seen = watched(gen)
    tracker.start(gen, Backend(Uploads(), journal, folder, schedule=FAST), record.id, upstream={"shot1": shot1})
    assert gen.wait(10).status == State.COMPLETED
    uploading = next(s for s in seen if s.status == State.UPLOADING)
    assert seen[0].waiting_for == "shot1" and uploading.waiting_for is None


def test_a_claimed_shot_looks_at_the_other_kernels_row_at_once(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    tracker = Tracker(workers=2, clock=lambda: 100.0)
    try:
        shot1 = finished_clip(tmp_path, "shot1", VIDEO)
        request = parse("A kite")
        _, record = journal.begin("shot2", request.body, waiting=True)
        assert journal.claim(record.id)
        gen = Generation(request)
        tracker.start(gen, Backend(Service(), journal, tmp_path, schedule=FAST), record.id, upstream={"shot1": shot1})

        def looks():
            return [due for due, _, job, _ in tracker._due if job.__name__ == "_check_other_submit"]

        # looked at once (at 100.0), found the row fresh, so the next look is OTHER_SUBMIT_LOOK_S later
        assert wait_until(lambda: looks() == [100.0 + tracker_module.OTHER_SUBMIT_LOOK_S]), looks()
    finally:
        tracker.close()
        journal.close()


def test_a_task_completed_without_a_url_right_at_submit_keeps_its_id_while_looking_again(world):
    class NoUrlYet(Service):
        def submit(self, body):
            self.submitted.append(body)
            return TaskStatus(id="video_88", status="completed", progress=100)

        def status(self, task_id):
            return TaskStatus(id=task_id, status="completed", progress=100, url=f"https://cdn.example/{task_id}.mp4")

    journal, tracker, folder = world
    request = parse("A kite")
    _, record = journal.begin("id", request.body)
    gen = Generation(request)
    seen = watched(gen)
    tracker.start(gen, Backend(NoUrlYet(), journal, folder, schedule=FAST), record.id)
    assert gen.wait(10).status == State.COMPLETED
    looking = next(s for s in seen if s.status == State.IN_PROGRESS)
    assert (looking.task_id, looking.progress, looking.service_status) == ("video_88", 100, "completed")
