"""Shared and damaged folders: a teacher's read-only results folder still shows every saved
video, a damaged journal is named and never overwritten, and a planted journal cannot put
markup or a path outside the folder in front of the user.

Read-only is made with `chattr +i` (root ignores `chmod a-w`, so a chmod test would pass
without testing anything); every test undoes it in a `finally`."""

from __future__ import annotations

import sqlite3

import pytest

from kling_nb import parse
from kling_nb.engine.generation import State
from kling_nb.engine.journal import Journal, JournalError
from kling_nb.engine.session import Runtime
from kling_nb.notebook import render
from kling_nb.sim import SimConfig, Simulator

from .read_only import immutable


@pytest.fixture
def sim():
    with Simulator(key="sk-t", config=SimConfig(queue_s=0.1, run_s=0.5)) as s:
        yield s


def finished_folder(sim, folder):
    """A folder with one saved result, its journal checkpointed (as a teacher would share it)."""
    rt = Runtime(output_dir=folder, base_url=sim.base_url, api_key="sk-t")
    try:
        gen = rt.run(parse("A lantern")).wait(30)
        assert gen.status == State.COMPLETED
    finally:
        rt.close()
    return gen


def test_a_read_only_folder_still_shows_every_saved_video(sim, tmp_path):
    folder = tmp_path / "kling_outputs"
    first = finished_folder(sim, folder)
    files = sorted(folder.iterdir())
    with immutable(*files, folder):
        rt = Runtime(output_dir=folder, base_url=sim.base_url, api_key="sk-t")
        try:
            assert rt.journal.read_only
            again = rt.run(parse("A lantern")).wait(10)
            assert again.status == State.COMPLETED and again.video_path == first.video_path
            with pytest.raises(JournalError, match="cannot be written.*output_dir"):
                rt.run(parse("Something new"))
        finally:
            rt.close()
    assert sim.count("submit") == 1


def test_a_read_only_folder_without_a_journal_refuses_new_work_clearly(sim, tmp_path):
    folder = tmp_path / "kling_outputs"
    folder.mkdir()
    with immutable(folder):
        rt = Runtime(output_dir=folder, base_url=sim.base_url, api_key="sk-t")
        try:
            with pytest.raises(JournalError, match="kling_outputs/journal.sqlite cannot be written"):
                rt.run(parse("A kite"))
        finally:
            rt.close()
    assert sim.count("submit") == 0


def test_a_damaged_journal_is_named_and_never_overwritten(tmp_path):
    path = tmp_path / "kling_outputs" / "journal.sqlite"
    path.parent.mkdir()
    junk = b"this is not a database, it is a student's essay" * 100
    path.write_bytes(junk)
    with pytest.raises(JournalError) as err:
        Journal(path)
    assert "kling_outputs/journal.sqlite is damaged" in err.value.message and "Move it aside" in err.value.message
    assert str(tmp_path) not in err.value.message  # no absolute path of this machine
    assert path.read_bytes() == junk


@pytest.mark.parametrize(
    "change",
    [
        "ALTER TABLE generations ADD COLUMN extra TEXT",
        "ALTER TABLE generations DROP COLUMN error_message",
        "ALTER TABLE events ADD COLUMN note TEXT",
    ],
    ids=["extra column", "missing column", "events changed"],
)
def test_a_journal_with_other_columns_is_refused_by_name_and_never_changed(tmp_path, change):
    path = tmp_path / "kling_outputs" / "journal.sqlite"
    journal = Journal(path)
    journal.begin("id", {"prompt": "A kite"})
    journal.close()
    db = sqlite3.connect(path)
    db.execute(change)
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(JournalError) as err:
        Journal(path)
    table = "events" if "events" in change else "generations"
    assert err.value.message == (
        f"kling_outputs/journal.sqlite was not written by this version of kling_nb (its {table} table has other "
        "columns); kling_nb will not change it. Move it aside (for example rename it to journal.sqlite.old) and "
        "run again; the saved videos stay where they are"
    )
    assert path.read_bytes() == before


def test_a_planted_journal_cannot_inject_markup_or_paths(tmp_path):
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    evil = '<img src=x onerror="alert(1)">'
    db.execute(
        "INSERT INTO generations (identity, run_id, name, label, body, task_id, status, progress, created_at,"
        " updated_at, video_path, error_message) VALUES (?, 'r', ?, ?, ?, 't', ?, ?, 0, 0, ?, ?)",
        (
            "id",
            evil,
            '{"mode": "<b>x</b>", "bad": {"nested": 1}}',
            '{"prompt": "' + evil.replace('"', "'") + '"}',
            'failed"><script>alert(1)</script>',
            '50" onmouseover="alert(1)',
            "../../etc/passwd",
            evil,
        ),
    )
    db.commit()
    db.close()
    journal = Journal(path)
    try:
        record = journal.history(1)[0]
        assert record.status == "unknown" and record.progress == 0 and record.video_path is None
        assert record.label == {"mode": "<b>x</b>"}
        rt = Runtime(output_dir=tmp_path, environ={})
        gen = rt.from_record(record)
        snap = gen.snapshot()
        html = render.generation_html(snap) + render.journal_table_html([record])
        assert "<script>" not in html and "<img" not in html and 'onmouseover="' not in html
        rt.close()
    finally:
        journal.close()


def test_closing_the_journal_never_closes_a_connection_another_thread_is_using(tmp_path):
    import threading

    journal = Journal(tmp_path / "journal.sqlite")
    inside, go_on, outcome = threading.Event(), threading.Event(), []

    def slow_write(db):
        inside.set()
        go_on.wait(10)  # the session is closed meanwhile, from another thread
        return db.execute("INSERT INTO uploads VALUES ('x', 'https://u', 0, NULL)").rowcount

    def worker():
        outcome.append(journal.transaction(slow_write))
        for _ in range(2):  # its first use after the close closes its connection; every use says why
            try:
                journal.history(1)
            except JournalError as err:
                outcome.append(err.message)

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(10)
    journal.close()  # from the main thread, while the worker is mid-transaction
    go_on.set()
    thread.join(10)
    assert outcome[0] == 1  # its transaction finished on its own connection
    assert outcome[1:] == [f"{tmp_path.name}/journal.sqlite was closed (the session ended)"] * 2
    with pytest.raises(JournalError, match="was closed"):  # and in the thread that closed it
        journal.history(1)
