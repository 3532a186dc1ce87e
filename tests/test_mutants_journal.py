"""The journal's promises at their edges (gaps found by mutation testing, `make mutate`): the
decision for waiting and quota-refused rows, what errors and statuses are recorded, planted
values read back safely, read-only folders, and a failed write that leaves nothing behind."""

from __future__ import annotations

import os
import sqlite3

import pytest

from kling_nb.engine.journal import Journal, JournalError, Record
from kling_nb.service.status import TaskStatus

from .read_only import immutable

BODY = {"model": "kling-video-o1", "prompt": "A kite"}


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "out" / "journal.sqlite")
    yield j
    j.close()


def status(state, progress=0, task="video_1", **kw):
    return TaskStatus(id=task, status=state, progress=progress, **kw)


# -- the decision --------------------------------------------------------------------------
def test_a_quota_refusal_is_shown_again_not_paid_for_again(journal):
    _, rec = journal.begin("id1", BODY)
    journal.record_error(rec.id, "insufficient_quota", "out of credits")
    decision, again = journal.begin("id1", BODY)
    assert (decision, again.id) == ("reuse", rec.id)
    assert journal.would_send("id1") is False


def test_any_other_failure_is_sent_again(journal):
    _, rec = journal.begin("id1", BODY)
    journal.record_error(rec.id, "content_policy_violation", "refused")
    assert journal.would_send("id1") is True
    assert journal.begin("id1", BODY)[0] == "new"


@pytest.mark.parametrize(
    "history, sends",
    [
        ((), True),  # never seen
        (("submitting",), False),  # may be billed: never resent by itself
        (("in_progress",), False),  # in flight: reattach
        (("completed",), False),  # done: reuse
    ],
)
def test_would_send_says_what_begin_would_decide(journal, history, sends):
    if history:
        _, rec = journal.begin("id1", BODY)
        if history[0] != "submitting":
            journal.record_status(rec.id, status(history[0], 50, url="https://cdn/v.mp4"))
    assert journal.would_send("id1") is sends
    decision, _ = journal.begin("id1", BODY)
    assert (decision == "new") is sends


def test_a_waiting_row_is_handed_to_whoever_claims_it_once(journal):
    decision, rec = journal.begin("story-2", BODY, waiting=True)
    assert (decision, rec.status) == ("new", "waiting")
    assert [(s, p) for _, s, p in journal.events(rec.id)] == [("waiting", 0)]
    # a second kernel running the same story gets the same row, still unsent
    decision, same = journal.begin("story-2", BODY)
    assert (decision, same.id, same.status) == ("new", rec.id, "waiting")
    assert [r.id for r in journal.pending()] == [rec.id]  # waiting rows are pending work
    assert journal.claim(rec.id) is True
    assert journal.claim(rec.id) is False  # only one claimer submits
    assert journal.get(rec.id).status == "submitting"
    assert [(s, p) for _, s, p in journal.events(rec.id)] == [("waiting", 0), ("submitting", 0)]


def test_claim_of_a_row_that_is_not_waiting_changes_nothing(journal):
    _, rec = journal.begin("id1", BODY)
    journal.record_status(rec.id, status("queued"))
    assert journal.claim(rec.id) is False
    assert journal.get(rec.id).status == "queued"


# -- what is recorded ------------------------------------------------------------------------
def test_an_unknown_submit_is_recorded_with_its_reason_and_event(journal):
    _, rec = journal.begin("id1", BODY)
    journal.mark_unknown(rec.id, "no answer from the service")
    got = journal.get(rec.id)
    assert (got.status, got.error_code, got.error_message) == (
        "unknown",
        "submit_unknown",
        "no answer from the service",
    )
    assert [(s, p) for _, s, p in journal.events(rec.id)] == [("submitting", 0), ("unknown", 0)]


@pytest.mark.parametrize(
    "code, stored", [(None, None), (422, "422"), ("content_policy_violation", "content_policy_violation")]
)
def test_an_error_is_final_by_default_and_keeps_its_code(journal, code, stored):
    _, rec = journal.begin("id1", BODY)
    journal.record_status(rec.id, status("in_progress", 40))
    journal.record_error(rec.id, code, "refused")
    got = journal.get(rec.id)
    assert (got.status, got.error_code, got.error_message) == ("failed", stored, "refused")
    assert [(s, p) for _, s, p in journal.events(rec.id)][-1] == ("failed", 40)


def test_a_non_final_error_adds_no_event(journal):
    _, rec = journal.begin("id1", BODY)
    journal.record_status(rec.id, status("completed", 100, url="https://cdn/v.mp4"))
    before = journal.events(rec.id)
    journal.record_error(rec.id, None, "could not save", final=False)
    assert journal.events(rec.id) == before
    assert journal.get(rec.id).error_code is None


@pytest.mark.parametrize("code, stored", [(1301, "1301"), ("quota", "quota")])
def test_a_failed_task_keeps_the_services_error_code(journal, code, stored):
    _, rec = journal.begin("id1", BODY)
    journal.record_status(rec.id, status("failed", error_code=code, error_message="bad"))
    assert journal.get(rec.id).error_code == stored


def test_a_status_without_an_error_code_stores_none(journal):
    _, rec = journal.begin("id1", BODY)
    journal.record_status(rec.id, status("in_progress", 10))
    assert journal.get(rec.id).error_code is None


def test_a_poll_that_brings_only_a_url_still_records_it(journal):
    _, rec = journal.begin("id1", BODY)
    journal.record_status(rec.id, status("completed", 100))
    journal.record_status(rec.id, status("completed", 100, url="https://cdn/v.mp4"))
    assert journal.get(rec.id).url == "https://cdn/v.mp4"


def test_history_shows_the_latest_fifty_by_default(journal):
    for i in range(55):
        journal.begin(f"id{i}", BODY)
    history = journal.history()
    assert len(history) == 50 and history[0].identity == "id54"


def test_an_unknown_entry_is_named(journal):
    with pytest.raises(KeyError, match="no journal entry #999"):
        journal.get(999)


def test_an_upload_url_is_not_handed_out_at_the_very_end_of_its_margin(tmp_path):
    now = [1000.0]
    j = Journal(tmp_path / "j.sqlite", clock=lambda: now[0])
    try:
        j.record_upload("sha", "https://cdn/a.png", expires_at=1060.0)  # exactly the 60 s margin
        assert j.upload_url("sha") is None
        j.record_upload("sha", "https://cdn/b.png", expires_at=1060.5)
        assert j.upload_url("sha") == "https://cdn/b.png"
    finally:
        j.close()


@pytest.mark.parametrize(
    "expires_at, now, expired",
    [(None, 10**12, False), (100.0, 99.0, False), (100.0, 100.0, True), (100.0, 101.0, True)],
)
def test_a_record_expires_at_its_expiry_time(expires_at, now, expired):
    record = Record(id=1, identity="i", run_id="r", name=None, expires_at=expires_at)
    assert record.is_expired(now) is expired


def test_is_expired_uses_the_wall_clock_by_default():
    assert Record(id=1, identity="i", run_id="r", name=None, expires_at=1.0).is_expired() is True
    assert Record(id=1, identity="i", run_id="r", name=None, expires_at=4e9).is_expired() is False


# -- other records in the same file (engine/money.py) ----------------------------------------
def test_a_failed_transaction_leaves_nothing_and_the_journal_goes_on(journal):
    def half_then_fail(db):
        db.execute("INSERT INTO uploads VALUES ('sha', 'https://cdn/a.png', 0, NULL)")
        raise ValueError("a bug halfway")

    with pytest.raises(ValueError, match="a bug halfway"):
        journal.transaction(half_then_fail)
    assert journal.upload_url("sha") is None
    journal.record_upload("sha2", "https://cdn/b.png")  # the next write works
    assert journal.rows("SELECT sha256, url FROM uploads") == [("sha2", "https://cdn/b.png")]


def test_rows_of_a_table_an_older_journal_lacks_read_as_empty(journal):
    assert journal.rows("SELECT * FROM charges") == []
    assert journal.rows("SELECT url FROM uploads WHERE sha256 = ?", ("x",)) == []
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        journal.rows("SELECT nonsense FROM uploads")


# -- opening ---------------------------------------------------------------------------------
def test_a_journal_in_a_new_nested_folder_is_created_writable(tmp_path):
    path = tmp_path / "a" / "b" / "kling_outputs" / "journal.sqlite"
    j = Journal(path)
    try:
        assert not j.read_only and path.is_file()
        assert j.begin("id1", BODY)[0] == "new"
    finally:
        j.close()


def test_a_damaged_journal_error_gives_sqlites_reason(tmp_path):
    path = tmp_path / "kling_outputs" / "journal.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"an essay, not a database" * 100)
    with pytest.raises(JournalError) as err:
        Journal(path)
    assert err.value.message.startswith("kling_outputs/journal.sqlite is damaged (file is not a database);")


def test_one_connection_per_thread_however_often_it_reads(journal):
    _, rec = journal.begin("id1", BODY)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        journal.get(rec.id)
        journal.history(5)
    assert len(os.listdir("/proc/self/fd")) <= fds + 2


READ_ONLY = (
    "kling_outputs/journal.sqlite cannot be written (a read-only or shared folder): saved results are shown, but "
    "nothing new can be recorded or saved there. Set %config KlingMagics.output_dir to a folder of your own to generate"
)


def test_a_read_only_folder_without_a_journal_leaves_no_file_anywhere(tmp_path, monkeypatch):
    folder = tmp_path / "kling_outputs"
    folder.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with immutable(folder):
        j = Journal(folder / "journal.sqlite")
        try:
            assert j.read_only and j.history() == [] and j.pending() == []
            with pytest.raises(JournalError) as err:
                j.begin("id1", BODY)
            assert err.value.message == READ_ONLY
        finally:
            j.close()
    assert list(elsewhere.iterdir()) == [] and list(folder.iterdir()) == []


def test_a_read_only_journal_refuses_force_even_for_a_saved_result(tmp_path):
    folder = tmp_path / "kling_outputs"
    j = Journal(folder / "journal.sqlite")
    _, rec = j.begin("id1", BODY)
    j.record_video(rec.id, "v.mp4", "abc")
    j.close()
    db = sqlite3.connect(folder / "journal.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    files = sorted(folder.iterdir())
    with immutable(*files, folder):
        j = Journal(folder / "journal.sqlite")
        try:
            assert j.read_only
            assert j.begin("id1", BODY)[0] == "reuse"
            with pytest.raises(JournalError, match="cannot be written"):
                j.begin("id1", BODY, force=True)
        finally:
            j.close()


# -- planted values ----------------------------------------------------------------------------
def planted(tmp_path, **values):
    """A journal whose one row was written by someone else, with any values at all."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE generations (id INTEGER PRIMARY KEY, identity, run_id, name, label, body, task_id, status,"
        " progress, created_at, updated_at, url, expires_at, video_path, video_sha256, error_code, error_message)"
    )
    row = {"identity": "i", "run_id": "r", "label": "{}", "body": "{}", "status": "queued", "progress": 0}
    row.update(values)
    db.execute(f"INSERT INTO generations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
    db.commit()
    db.close()
    j = Journal(path)
    try:
        return j.history(1)[0]
    finally:
        j.close()


def test_planted_numbers_are_kept_in_range(tmp_path):
    assert planted(tmp_path, progress=101).progress == 100


def test_planted_times_that_are_not_numbers_read_as_none(tmp_path):
    record = planted(tmp_path, created_at="noon", updated_at=b"x", expires_at="tomorrow")
    assert (record.created_at, record.updated_at, record.expires_at) == (0.0, 0.0, None)
    assert planted(tmp_path / "n", created_at=5, expires_at=7.5).expires_at == 7.5


def test_planted_missing_identity_and_run_read_as_empty(tmp_path):
    record = planted(tmp_path, identity=None, run_id=None)
    assert (record.identity, record.run_id) == ("", "")


def test_planted_values_of_other_types_read_as_text(tmp_path):
    record = planted(tmp_path, task_id=123, name=4.5, error_code=1301)
    assert (record.task_id, record.name, record.error_code) == ("123", "4.5", "1301")


def test_a_planted_label_or_body_that_is_not_a_mapping_reads_as_empty(tmp_path):
    record = planted(tmp_path, label="[1, 2]", body='"text"')
    assert (record.label, record.body) == ({}, {})


def test_closing_the_journal_closes_what_every_thread_opened(tmp_path):

    j = Journal(tmp_path / "journal.sqlite")
    _, rec = j.begin("id1", BODY)
    fds = len(os.listdir("/proc/self/fd"))
    read_from_four_threads(j, rec.id)
    assert len(os.listdir("/proc/self/fd")) > fds  # each worker thread has its own connection
    j.close()
    assert len(os.listdir("/proc/self/fd")) < fds  # all of them closed, the first one's too


def test_a_read_only_folder_holding_some_other_database_says_it_is_damaged(tmp_path):
    folder = tmp_path / "kling_outputs"
    folder.mkdir()
    db = sqlite3.connect(folder / "journal.sqlite")
    db.execute("CREATE TABLE notes (text)")
    db.commit()
    db.close()
    with immutable(folder / "journal.sqlite", folder):
        with pytest.raises(JournalError) as err:
            Journal(folder / "journal.sqlite")
    assert err.value.message.startswith("kling_outputs/journal.sqlite is damaged (no such table: generations);")


def test_closing_a_read_only_journal_closes_what_every_thread_opened(tmp_path):

    folder = tmp_path / "kling_outputs"
    j = Journal(folder / "journal.sqlite")
    _, rec = j.begin("id1", BODY)
    j.close()
    db = sqlite3.connect(folder / "journal.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with immutable(*sorted(folder.iterdir()), folder):
        j = Journal(folder / "journal.sqlite")
        assert j.read_only
        fds = len(os.listdir("/proc/self/fd"))
        read_from_four_threads(j, rec.id)
        assert len(os.listdir("/proc/self/fd")) > fds
        j.close()
        assert len(os.listdir("/proc/self/fd")) < fds


def read_from_four_threads(journal, record_id):
    """Four threads read the journal once each and end (each opens a connection of its own)."""
    import threading

    threads = [threading.Thread(target=journal.get, args=(record_id,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
