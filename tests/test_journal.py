"""The journal: the decision before any money is spent, history, uploads, and safety when
threads and processes write at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from kling_nb.engine.journal import Journal, Record
from kling_nb.service.status import TaskStatus

BODY = {"model": "kling-video-o1", "prompt": "A kite", "metadata": {"image_list": [{"image_url": "https://x/y.png"}]}}


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "out" / "journal.sqlite")
    yield j
    j.close()


def status(state, progress=0, task="video_1", **kw):
    return TaskStatus(id=task, status=state, progress=progress, **kw)


def test_first_time_is_new_and_written_before_sending(journal):
    decision, record = journal.begin("id1", BODY, name="kite", label={"mode": "pro"})
    assert decision == "new" and record.status == "submitting" and record.task_id is None
    assert record.body == BODY and record.label == {"mode": "pro"} and record.name == "kite"


def test_submitting_without_task_id_is_unknown_never_new(journal):
    journal.begin("id1", BODY)
    decision, _ = journal.begin("id1", BODY)
    assert decision == "unknown"


def test_in_flight_is_reattached(journal):
    _, rec = journal.begin("id1", BODY)
    journal.set_task(rec.id, status("queued"))
    decision, again = journal.begin("id1", BODY)
    assert decision == "reattach" and again.id == rec.id and again.task_id == "video_1"


def test_completed_is_reused(journal):
    _, rec = journal.begin("id1", BODY)
    journal.set_task(rec.id, status("queued"))
    journal.record_status(rec.id, status("completed", 100, url="https://cdn/x.mp4", expires_at=2_000_000_000))
    journal.record_video(rec.id, "kite-1.mp4", "ab" * 32)
    decision, again = journal.begin("id1", BODY)
    assert decision == "reuse" and again.video_path == "kite-1.mp4" and again.url == "https://cdn/x.mp4"


def test_failed_is_submitted_again(journal):
    _, rec = journal.begin("id1", BODY)
    journal.set_task(rec.id, status("queued"))
    journal.record_status(rec.id, status("failed", 40, error_code="policy", error_message="no"))
    decision, new = journal.begin("id1", BODY)
    assert decision == "new" and new.id != rec.id


def test_force_always_makes_a_new_one(journal):
    _, rec = journal.begin("id1", BODY)
    journal.set_task(rec.id, status("completed", 100))
    decision, new = journal.begin("id1", BODY, force=True)
    assert decision == "new" and new.id != rec.id


def test_refusal_at_submit_is_final_and_resubmittable(journal):
    _, rec = journal.begin("id1", BODY)
    journal.record_error(rec.id, 422, "refused", final=True)
    assert journal.get(rec.id).status == "failed"
    assert journal.begin("id1", BODY)[0] == "new"


def test_unknown_outcome_is_never_resubmitted_by_itself(journal):
    _, rec = journal.begin("id1", BODY)
    journal.mark_unknown(rec.id, "no answer")
    decision, again = journal.begin("id1", BODY)
    assert decision == "unknown" and again.id == rec.id and again.status == "unknown"
    assert journal.begin("id1", BODY, force=True)[0] == "new"


def test_non_final_error_keeps_status(journal):
    _, rec = journal.begin("id1", BODY)
    journal.set_task(rec.id, status("completed", 100, url="https://cdn/x"))
    journal.record_error(rec.id, None, "could not save", final=False)
    got = journal.get(rec.id)
    assert got.status == "completed" and got.error_message == "could not save"


def test_events_only_on_change(journal):
    _, rec = journal.begin("id1", BODY)
    for s in [
        status("queued"),
        status("queued"),
        status("in_progress", 10),
        status("in_progress", 10),
        status("in_progress", 50),
        status("completed", 100),
    ]:
        journal.record_status(rec.id, s)
    assert [(e[1], e[2]) for e in journal.events(rec.id)] == [
        ("submitting", 0),
        ("queued", 0),
        ("in_progress", 10),
        ("in_progress", 50),
        ("completed", 100),
    ]


def test_pending_history_and_names(journal):
    runs = []
    for i in range(3):
        _, rec = journal.begin(
            f"id{i}", {**BODY, "prompt": f"p{i}"}, name="sweep" if i else "one", run_id="r1" if i else "r0"
        )
        journal.set_task(rec.id, status("queued", task=f"video_{i}"))
        runs.append(rec)
    journal.record_status(runs[0].id, status("completed", 100, task="video_0"))
    assert [r.task_id for r in journal.pending()] == ["video_1", "video_2"]
    assert [r.body["prompt"] for r in journal.history()] == ["p2", "p1", "p0"]
    assert [r.body["prompt"] for r in journal.by_name("sweep")] == ["p1", "p2"]
    _, newer = journal.begin("id9", BODY, name="sweep", run_id="r2")
    assert [r.id for r in journal.by_name("sweep")] == [newer.id]
    assert journal.by_name("nobody") == []


def test_uploads_are_reused_until_near_expiry(tmp_path):
    now = [1000.0]
    j = Journal(tmp_path / "j.sqlite", clock=lambda: now[0])
    j.record_upload("sha", "https://cdn/a.png", expires_at=1100.0)
    assert j.upload_url("sha") == "https://cdn/a.png"
    now[0] = 1050.0  # 50 s left: inside the safety margin
    assert j.upload_url("sha") is None
    assert j.upload_url("other") is None
    j.close()


def test_a_new_journal_object_sees_everything(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    _, rec = j.begin("id1", BODY)
    j.set_task(rec.id, status("in_progress", 30))
    j.close()
    j2 = Journal(path)  # a new kernel
    assert j2.begin("id1", BODY)[0] == "reattach"
    assert j2.get(rec.id).progress == 30
    j2.close()


def test_records_hold_no_key_field():
    assert not {"key", "api_key", "authorization", "headers"} & set(Record.__dataclass_fields__)


def test_threads_lose_nothing(journal):
    _, rec = journal.begin("id1", BODY)

    def writer(n):
        for i in range(100):
            _, r = journal.begin(f"t{n}-{i}", BODY)
            journal.record_status(r.id, status("in_progress", i % 100 + 1, task=f"v{n}-{i}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(journal.history(10_000)) == 801


WORKER = """
import sys, json
from kling_nb.engine.journal import Journal
from kling_nb.service.status import TaskStatus
path, tag = sys.argv[1], sys.argv[2]
j = Journal(path)
decisions = []
for i in range(50):
    d, rec = j.begin(f"shared-{i}", {"prompt": str(i)})
    decisions.append(d)
    if d == "new":
        j.set_task(rec.id, TaskStatus(id=f"video_{tag}_{i}", status="queued"))
    _, own = j.begin(f"{tag}-{i}", {"prompt": tag})
    for p in range(1, 6):
        j.record_status(own.id, TaskStatus(id=f"own_{tag}_{i}", status="in_progress", progress=p))
print(json.dumps(decisions))
j.close()
"""


def test_two_processes_never_both_submit_and_lose_no_rows(tmp_path):
    path = tmp_path / "shared.sqlite"
    Journal(path).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), tag], stdout=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for i in range(50):
        assert sorted([outs[0][i], outs[1][i]]).count("new") == 1, f"identity {i} submitted twice"
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM generations WHERE identity LIKE 'shared-%'").fetchone()[0] == 50
        own = db.execute(
            "SELECT COUNT(*) FROM events e JOIN generations g ON g.id = e.generation_id "
            "WHERE g.identity NOT LIKE 'shared-%'"
        ).fetchone()[0]
        assert own == 2 * 50 * 6  # 'submitting' + 5 progress steps, for every record of both
    finally:
        db.close()


def test_elapsed_in_record_times(journal, tmp_path):
    before = time.time()
    _, rec = journal.begin("id1", BODY)
    assert before <= rec.created_at <= time.time()  # stamped from the wall clock by default

    now = [1000.0]
    j = Journal(tmp_path / "clocked.sqlite", clock=lambda: now[0])
    try:
        _, rec = j.begin("id1", BODY)
        now[0] = 1004.5
        j.record_status(rec.id, status("queued"))
        now[0] = 1012.0
        j.record_status(rec.id, status("in_progress", 40))
        now[0] = 1030.0
        j.record_status(rec.id, status("in_progress", 40))  # a poll that changed nothing writes nothing
        got = j.get(rec.id)
        events = j.events(rec.id)
    finally:
        j.close()
    assert (rec.created_at, rec.updated_at) == (1000.0, 1000.0)
    assert got.created_at == 1000.0 and got.updated_at - got.created_at == 12.0
    assert [(at, s) for at, s, _ in events] == [(1000.0, "submitting"), (1004.5, "queued"), (1012.0, "in_progress")]
