"""The journal: every generation this project paid for, in SQLite beside the videos.

It answers one question before any money is spent: has this exact request been sent before,
and what became of it? (runtime.Runtime acts on the answer.)

    begin(identity)  ->  reuse      completed before: show the saved video, send nothing
                         reattach   a task is in flight (this kernel or a dead one): poll it
                         unknown    a submit was started but no task id was recorded (the
                                    kernel died mid-submit, or the reply was lost): it may have
                                    been billed, so it is never resubmitted automatically
                         new        nothing usable (none, failed, or --force): a new row in
                                    state 'submitting' is written before the POST is sent

A folder someone else owns (a teacher's shared results, a read-only mount) is opened
read-only: every saved result is still shown, and asking for anything new is a ConfigError
that says why. A damaged file is never overwritten: the error names it and says what to do.
Values read back are checked before anyone renders them: the file may have been planted.

Two kernels (two processes) share one file safely: WAL mode, a busy timeout, and begin()
runs in a BEGIN IMMEDIATE transaction, so two kernels running the same cell at once cannot
both decide 'new'. Each thread uses its own connection (sqlite3 connections are not meant to
be shared across threads). The body stored is the exact JSON sent; the key is never part of
it (it travels only in a header).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..contract import FINAL_STATUSES
from ..errors import ConfigError
from ..service.status import TaskStatus

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    identity      TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    name          TEXT,
    label         TEXT NOT NULL DEFAULT '{}',
    body          TEXT NOT NULL,
    task_id       TEXT,
    status        TEXT NOT NULL,
    progress      INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    url           TEXT,
    expires_at    REAL,
    video_path    TEXT,
    video_sha256  TEXT,
    error_code    TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS generations_identity ON generations(identity, id);
CREATE INDEX IF NOT EXISTS generations_name ON generations(name, id);
CREATE TABLE IF NOT EXISTS events (
    generation_id INTEGER NOT NULL REFERENCES generations(id),
    at            REAL NOT NULL,
    status        TEXT NOT NULL,
    progress      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_generation ON events(generation_id);
CREATE TABLE IF NOT EXISTS uploads (
    sha256      TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    expires_at  REAL
);
"""
UPLOAD_MARGIN_S = 60.0  # never hand out an upload URL about to expire
_STATUS_WORD = re.compile(r"[a-z_]{1,32}")
_T = TypeVar("_T")


class JournalError(ConfigError):
    """The journal cannot be used as asked (damaged, or read-only and asked to record)."""


@dataclass(frozen=True)
class Record:
    id: int
    identity: str
    run_id: str
    name: str | None
    label: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    status: str = "submitting"
    progress: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    url: str | None = None
    expires_at: float | None = None
    video_path: str | None = None
    video_sha256: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def is_expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now if now is not None else time.time())

    @property
    def prompt_excerpt(self) -> str:
        text = " ".join(str(self.body.get("prompt", "")).split())
        return text if len(text) <= 60 else text[:59] + "…"


_COLUMNS = [f for f in Record.__dataclass_fields__]


class Journal:
    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._clock = clock
        self._local = threading.local()
        # Every connection with the thread that made it: a connection is closed only by its own
        # thread, or once that thread has ended (closing one that another thread is using can
        # crash the process).
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._uri: str | None = None  # set when the journal is opened read-only
        self.read_only = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db()
            self._check_layout()  # before anything is written to a file that is not ours
            with db:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            if _damaged(err):
                self.close()
                raise self._damaged_error(err) from None
            self._open_read_only()
        except OSError:
            self._open_read_only()

    def _check_layout(self) -> None:
        """A journal whose tables are not the ones this kling_nb writes (planted, or from another
        version) is refused like a damaged one: reads and writes by position would fail half-way."""
        found = _layout(self._db())
        for table, columns in _expected_layout().items():
            if table in found and found[table] != columns:  # a missing table is made (or, read-only, refused)
                self.close()
                raise JournalError(
                    f"{self.where} was not written by this version of kling_nb (its {table} table has other "
                    f"columns); kling_nb will not change it. Move it aside (for example rename it to "
                    f"{self.path.name}.old) and run again; the saved videos stay where they are"
                )

    @property
    def where(self) -> str:
        """The file as people see it in a shared notebook: folder/name, never a full path."""
        return f"{self.path.parent.name}/{self.path.name}"

    def _damaged_error(self, err: Exception) -> JournalError:
        return JournalError(
            f"{self.where} is damaged ({err}); kling_nb will not overwrite it. Move it aside (for "
            f"example rename it to {self.path.name}.damaged) and run again; the saved videos stay where they are"
        )

    def _open_read_only(self) -> None:
        """Open a journal in a folder that cannot be written: saved results are still shown."""
        self._drop_connections()
        self.read_only = True
        if self.path.exists():
            # immutable=1: read without the -wal/-shm files, which cannot be created here.
            self._uri = f"file:{self.path}?mode=ro&immutable=1"
        else:
            self._uri = "file:kling-empty-journal?mode=memory&cache=shared"
            self._keep_alive = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
            self._keep_alive.executescript(_SCHEMA)
        try:
            self._db().execute("SELECT count(*) FROM generations").fetchone()
        except sqlite3.DatabaseError as err:
            self.close()
            raise self._damaged_error(err) from None
        self._check_layout()

    # -- connections -------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if self._closed:
            if db is not None:  # a worker still busy when the journal was closed: its turn now
                self._local.db = None
                db.close()
            raise JournalError(f"{self.where} was closed (the session ended)")
        if db is None:
            if self._uri is not None:
                db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE).
                db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA busy_timeout=30000")
                db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._all_lock:
                self._all.append((threading.current_thread(), db))
        return db

    def _write(self, sql_steps: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `sql_steps(db)` in one IMMEDIATE transaction: all of it lands, or none."""
        if self.read_only:
            raise self.read_only_error()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = sql_steps(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    # Other records kept in the same file (engine/money.py) go through these two.
    def transaction(self, sql_steps: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `sql_steps(db)` in one write transaction (JournalError when read-only)."""
        return self._write(sql_steps)

    def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Read rows; a table this (older or read-only) journal lacks reads as empty."""
        try:
            return [tuple(r) for r in self._db().execute(sql, params)]
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return []
            raise

    def close(self) -> None:
        """End the journal: this thread's connections and those of ended threads are closed now;
        a thread still using its own (a worker finishing a job) closes it at its next use."""
        self._closed = True
        self._drop_connections()

    def _drop_connections(self) -> None:
        here = threading.current_thread()
        with self._all_lock:
            safe = [(t, db) for t, db in self._all if t is here or not t.is_alive()]
            self._all = [pair for pair in self._all if pair not in safe]
        for _, db in safe:
            try:
                db.close()
            except sqlite3.ProgrammingError:
                pass
        self._local.db = None

    def read_only_error(self) -> JournalError:
        return JournalError(
            f"{self.where} cannot be written (a read-only or shared folder): saved results are shown, "
            "but nothing new can be recorded or saved there. Set %config KlingMagics.output_dir to a "
            "folder of your own to generate"
        )

    # -- the decision ------------------------------------------------------------------
    def begin(
        self,
        identity: str,
        body: dict[str, Any],
        *,
        name: str | None = None,
        label: dict[str, Any] | None = None,
        force: bool = False,
        run_id: str | None = None,
        waiting: bool = False,
    ) -> tuple[str, Record]:
        """What to do about this request, decided atomically. A new row starts 'submitting'
        (the POST follows at once) or, for a request that waits on another generation,
        'waiting': nothing is sent until claim() turns it into 'submitting'."""
        if self.read_only:
            record = None if force else self.latest(identity)
            if record is None or (decision := _decide(record)) is None:
                raise self.read_only_error()
            return decision, record

        def steps(db: sqlite3.Connection) -> tuple[str, Record]:
            if not force:
                row = db.execute(
                    "SELECT * FROM generations WHERE identity = ? ORDER BY id DESC LIMIT 1", (identity,)
                ).fetchone()
                decision = _decide(_record(row)) if row is not None else None
                if decision is not None:
                    return decision, _record(row)
                if row is not None and _record(row).status == "waiting":
                    return "new", _record(row)  # nothing was sent for it: whoever claims it submits
            now = self._clock()
            status = "waiting" if waiting else "submitting"
            cur = db.execute(
                "INSERT INTO generations (identity, run_id, name, label, body, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (identity, run_id or uuid.uuid4().hex, name, _json(label or {}), _json(body), status, now, now),
            )
            assert cur.lastrowid is not None  # set by the INSERT just made
            db.execute("INSERT INTO events VALUES (?, ?, ?, 0)", (cur.lastrowid, now, status))
            return "new", self._get(db, cur.lastrowid)

        return self._write(steps)

    def claim(self, record_id: int) -> bool:
        """A waiting row is about to be submitted: True for the one caller that turns it into
        'submitting' (two kernels running the same story never both submit it)."""

        def steps(db: sqlite3.Connection) -> bool:
            now = self._clock()
            cur = db.execute(
                "UPDATE generations SET status = 'submitting', updated_at = ? WHERE id = ? AND status = 'waiting'",
                (now, record_id),
            )
            if cur.rowcount:
                db.execute("INSERT INTO events VALUES (?, ?, 'submitting', 0)", (record_id, now))
            return cur.rowcount == 1

        return self._write(steps)

    def would_send(self, identity: str) -> bool:
        """True when begin() for this identity (without --force) would decide 'new'."""
        record = self.latest(identity)
        return record is None or (_decide(record) is None)

    def latest(self, identity: str) -> Record | None:
        row = (
            self._db()
            .execute("SELECT * FROM generations WHERE identity = ? ORDER BY id DESC LIMIT 1", (identity,))
            .fetchone()
        )
        return _record(row) if row else None

    def touch(self, record_id: int) -> None:
        """A submit under way is still alive (another kernel waiting on this row reads it)."""
        self._write(
            lambda db: db.execute("UPDATE generations SET updated_at = ? WHERE id = ?", (self._clock(), record_id))
        )

    # -- what happened next ------------------------------------------------------------
    def set_task(self, record_id: int, status: TaskStatus) -> Record:
        return self.record_status(record_id, status)

    def record_status(self, record_id: int, status: TaskStatus) -> Record:
        current = self.get(record_id)
        if (current.task_id, current.status, current.progress) == (status.id, status.status, status.progress) and (
            status.url in (None, current.url) and status.error_message in (None, current.error_message)
        ):
            return current  # a poll that changed nothing writes nothing (500 waiting tasks stay cheap)

        def steps(db: sqlite3.Connection) -> Record:
            old = self._get(db, record_id)
            now = self._clock()
            db.execute(
                "UPDATE generations SET task_id = ?, status = ?, progress = ?, url = COALESCE(?, url),"
                " expires_at = COALESCE(?, expires_at), error_code = COALESCE(?, error_code),"
                " error_message = COALESCE(?, error_message), updated_at = ? WHERE id = ?",
                (
                    status.id,
                    status.status,
                    status.progress,
                    status.url,
                    status.expires_at,
                    None if status.error_code is None else str(status.error_code),
                    status.error_message,
                    now,
                    record_id,
                ),
            )
            if (old.status, old.progress) != (status.status, status.progress):
                db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (record_id, now, status.status, status.progress))
            return self._get(db, record_id)

        return self._write(steps)

    def record_video(self, record_id: int, video_path: str, sha256: str) -> Record:
        def steps(db: sqlite3.Connection) -> Record:
            db.execute(
                "UPDATE generations SET video_path = ?, video_sha256 = ?, status = 'completed', progress = 100,"
                " error_code = NULL, error_message = NULL, updated_at = ? WHERE id = ?",
                (video_path, sha256, self._clock(), record_id),
            )
            return self._get(db, record_id)

        return self._write(steps)

    def record_error(self, record_id: int, code: str | int | None, message: str, *, final: bool = True) -> Record:
        """final=True: the generation failed (a re-run submits again). final=False: the task
        keeps its status (e.g. completed but not downloaded); the message is kept for the user."""
        return self._set_error(record_id, code, message, "failed" if final else None)

    def mark_unknown(self, record_id: int, message: str) -> Record:
        """A submit was sent but no answer came: it may have been accepted and billed. The
        record stays 'unknown' so that no re-run submits it again on its own (only --force)."""
        return self._set_error(record_id, "submit_unknown", message, "unknown")

    def _set_error(self, record_id: int, code: str | int | None, message: str, new_status: str | None) -> Record:
        def steps(db: sqlite3.Connection) -> Record:
            old = self._get(db, record_id)
            now = self._clock()
            status = new_status or old.status
            db.execute(
                "UPDATE generations SET status = ?, error_code = ?, error_message = ?, updated_at = ? WHERE id = ?",
                (status, None if code is None else str(code), message, now, record_id),
            )
            if status != old.status:
                db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (record_id, now, status, old.progress))
            return self._get(db, record_id)

        return self._write(steps)

    # -- reading -----------------------------------------------------------------------
    def get(self, record_id: int) -> Record:
        return self._get(self._db(), record_id)

    @staticmethod
    def _get(db: sqlite3.Connection, record_id: int) -> Record:
        row = db.execute("SELECT * FROM generations WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise KeyError(f"no journal entry #{record_id}")
        return _record(row)

    def pending(self) -> list[Record]:
        """Tasks in flight, and requests still waiting on others (nothing sent for them yet)."""
        rows = self._db().execute(
            "SELECT * FROM generations WHERE (task_id IS NOT NULL AND status NOT IN ('completed', 'failed', 'unknown'))"
            " OR status = 'waiting' ORDER BY id"
        )
        return [_record(r) for r in rows]

    def history(self, limit: int = 50) -> list[Record]:
        rows = self._db().execute("SELECT * FROM generations ORDER BY id DESC LIMIT ?", (limit,))
        return [_record(r) for r in rows]

    def by_name(self, name: str) -> list[Record]:
        """The records of the newest run (cell execution) that used this name."""
        db = self._db()
        row = db.execute("SELECT run_id FROM generations WHERE name = ? ORDER BY id DESC LIMIT 1", (name,)).fetchone()
        if row is None:
            return []
        rows = db.execute("SELECT * FROM generations WHERE name = ? AND run_id = ? ORDER BY id", (name, row[0]))
        return [_record(r) for r in rows]

    def events(self, record_id: int) -> list[tuple[float, str, int]]:
        rows = self._db().execute(
            "SELECT at, status, progress FROM events WHERE generation_id = ? ORDER BY rowid", (record_id,)
        )
        return [tuple(r) for r in rows]

    # -- uploads -----------------------------------------------------------------------
    def upload_url(self, sha256: str) -> str | None:
        row = self._db().execute("SELECT url, expires_at FROM uploads WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            return None
        url: str  # the column is TEXT NOT NULL
        url, expires_at = row
        if expires_at is not None and expires_at <= self._clock() + UPLOAD_MARGIN_S:
            return None
        return url

    def record_upload(self, sha256: str, url: str, expires_at: float | None = None) -> None:
        self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)", (sha256, url, self._clock(), expires_at)
            )
        )


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# Refusals that sending the same request again cannot fix: a re-run shows them, only --force
# sends again (a quota refusal must not turn "Run All" into a loop of paid attempts).
NOT_RESENT_CODES = frozenset({"insufficient_quota"})


def _decide(record: Record) -> str | None:
    """What an existing record means for a new run of the same request (None: send it)."""
    if record.status == "completed":
        return "reuse"
    if record.status == "failed" and record.error_code in NOT_RESENT_CODES:
        return "reuse"
    if record.status != "failed" and record.task_id:
        return "reattach"
    if record.status in ("submitting", "unknown"):
        return "unknown"
    return None


def _layout(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Each table of the journal's schema with its columns, in order, as `db` has them."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: [r[0] for r in db.execute("SELECT name FROM pragma_table_info(?)", (t,))] for t in tables}


@functools.cache
def _expected_layout() -> dict[str, list[str]]:
    """The tables and columns _SCHEMA makes (read from SQLite itself, so they are written once)."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        return {t: c for t, c in _layout(db).items() if t != "sqlite_sequence"}
    finally:
        db.close()


def _damaged(err: sqlite3.DatabaseError) -> bool:
    text = str(err).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def _record(row: Sequence[Any]) -> Record:
    """A row as a Record, every value checked: a planted journal must not reach the renderer
    as markup, a path outside the folder or a number that is not one."""
    data = dict(zip(_COLUMNS, row, strict=True))
    data["label"] = _json_dict(data["label"])
    data["label"] = {str(k): v for k, v in data["label"].items() if isinstance(v, (str, int, float, bool))}
    data["body"] = _json_dict(data["body"])
    status = data["status"]
    data["status"] = status if isinstance(status, str) and _STATUS_WORD.fullmatch(status) else "unknown"
    progress = data["progress"]
    data["progress"] = max(0, min(100, progress)) if isinstance(progress, int) else 0
    for key in ("identity", "run_id"):
        data[key] = str(data[key] or "")
    for key in ("name", "task_id", "url", "video_path", "video_sha256", "error_code", "error_message"):
        if data[key] is not None and not isinstance(data[key], str):
            data[key] = str(data[key])
    path = data["video_path"]
    if path is not None and (Path(path).is_absolute() or ".." in Path(path).parts):
        data["video_path"] = None  # never outside the output folder
    for key in ("created_at", "updated_at", "expires_at"):
        if data[key] is not None and not isinstance(data[key], (int, float)):
            data[key] = None if key == "expires_at" else 0.0
    return Record(**data)


def _json_dict(text: Any) -> dict[str, Any]:  # Any: a raw column, whatever a planted file holds
    try:
        value = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
