"""Money: the balance the service reports, spend measured from it, a budget that holds, and
limited keys for a class made with the vendor's own token endpoint.

No price is written anywhere in kling_nb. Spend is measured: the meter reads the key's balance
when a session starts submitting and again after generations are charged (coalesced: at
most one balance request every MIN_INTERVAL_S, never one per poll), and records each reading
in the journal. Spend is the sum of the drops in remaining credits between two readings of
one key within one session (what other notebooks spend between sessions is not counted).
When exactly one generation was charged between two readings, what it cost is kept for its
billing class; a cell's expected cost is built from those figures and always called an
estimate.

A failing balance endpoint never blocks or fails a generation: spend then reads "unknown",
with the reason.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import billing_class
from ..errors import ConfigError, KlingError
from ..service.account import Balance
from ..service.client import Client
from ..service.secret import Secret
from .journal import Journal

MIN_INTERVAL_S = 3.0  # at most one balance request this often
_SCHEMA = """
CREATE TABLE IF NOT EXISTS balance_readings (
    at        REAL NOT NULL,
    session   TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    remaining REAL,
    used      REAL,
    unlimited INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    at       REAL NOT NULL,
    session  TEXT NOT NULL,
    credits  REAL NOT NULL,
    classes  TEXT NOT NULL
);
"""


class BudgetError(KlingError):
    """A cell would go past the budget; nothing was sent."""


def key_id(key: Secret | str | None) -> str:
    """A short fingerprint that tells keys apart in the journal; it cannot give the key back."""
    raw = key.reveal() if isinstance(key, Secret) else (key or "")
    return hashlib.sha256(b"kling_nb key id:" + raw.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Spend:
    session: float | None  # None: unknown (see `why`)
    today: float
    all_time: float
    counts: dict[str, int]  # generations submitted in this journal, per billing class
    per_class: dict[str, float]  # measured cost of one generation of a class (an estimate for the next)
    balance: Balance | None
    why: str = ""


class Meter:
    """Balance readings of one key for one session, recorded in the journal."""

    def __init__(
        self, client: Client, journal: Journal, *, key: str, simulated: bool, clock: Callable[[], float] = time.time
    ):
        self.client, self.journal, self.simulated = client, journal, simulated
        self._clock = clock
        self._key = key
        self.session = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._last_at = 0.0
        self._pending: list[str] = []  # billing classes charged since the last reading
        self.last: Balance | None = None
        self.error: str = ""
        try:  # (one statement at a time: executescript would commit the transaction early)
            journal.transaction(lambda db: [db.execute(sql) for sql in _SCHEMA.split(";") if sql.strip()] and None)
        except KlingError:
            pass  # a read-only journal: readings are kept in memory only

    # -- reading ---------------------------------------------------------------------------
    def reading(self, *, fresh: bool = False) -> Balance | None:
        """The key's balance; asks the service only when `fresh` and the last reading is older
        than MIN_INTERVAL_S, or when there is none. None (with `error`) when it cannot say."""
        with self._lock:
            recent = self.last is not None and self._clock() - self._last_at < MIN_INTERVAL_S
            if recent and not (fresh and self._pending):
                return self.last
        try:
            balance = self.client.balance()
        except KlingError as err:
            self.error = err.message
            return None
        except Exception as err:  # a broken endpoint never breaks a generation
            self.error = f"{type(err).__name__}"
            return None
        self._record(balance)
        return balance

    def _record(self, balance: Balance) -> None:
        with self._lock:
            previous, pending = self.last, self._pending
            self.last, self._last_at, self._pending, self.error = balance, self._clock(), [], ""
        now = self._clock()
        spent = _drop(previous, balance)

        def steps(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO balance_readings VALUES (?, ?, ?, ?, ?, ?)",
                (now, self.session, self._key, balance.remaining_credits, balance.used_credits, int(balance.unlimited)),
            )
            if spent is not None and spent > 0 and pending:
                db.execute("INSERT INTO charges VALUES (?, ?, ?, ?)", (now, self.session, spent, json.dumps(pending)))

        try:
            self.journal.transaction(steps)
        except KlingError:
            pass  # read-only: the reading still counts for this session, in memory

    def before_submit(self) -> None:
        """The first submit of a session: read the balance it starts from."""
        if self.last is None and not self.error:
            self.reading()

    def charged(self, body: dict[str, Any]) -> None:
        """A submit was accepted: it is billed. Read the balance again if the last reading is
        older than MIN_INTERVAL_S; otherwise the next reading (a budget check, %kling spend, the
        next charge) covers it. Runs on a tracker worker, right after the submit."""
        with self._lock:
            self._pending.append(billing_class(body))
            stale = self._clock() - self._last_at >= MIN_INTERVAL_S
        if stale:
            self.reading(fresh=True)

    # -- spend -----------------------------------------------------------------------------
    def spend(self) -> Spend:
        balance = self.reading(fresh=True)
        readings = self.journal.rows("SELECT at, session, key_id, remaining, used FROM balance_readings ORDER BY rowid")
        midnight = _dt.datetime.combine(_dt.date.today(), _dt.time()).timestamp()
        session, today, all_time = 0.0, 0.0, 0.0
        last: dict[tuple[Any, Any], tuple[Any, ...]] = {}
        for at, sess, key, remaining, used in readings:
            before = last.get((sess, key))
            last[(sess, key)] = (remaining, used)
            if before is None:
                continue
            drop = _drop_values(before, (remaining, used))
            if drop:
                all_time += drop
                today += drop if isinstance(at, (int, float)) and at >= midnight else 0.0
                session += drop if sess == self.session else 0.0
        counts: dict[str, int] = {}
        for (body,) in self.journal.rows("SELECT body FROM generations WHERE task_id IS NOT NULL"):
            try:
                cls = billing_class(json.loads(str(body)))
            except (ValueError, TypeError, AttributeError):
                continue
            counts[cls] = counts.get(cls, 0) + 1
        return Spend(
            session=session if balance is not None or session else None,
            today=today,
            all_time=all_time,
            counts=counts,
            per_class=self.per_class(),
            balance=balance,
            why=self.error,
        )

    def per_class(self) -> dict[str, float]:
        """What one generation of each billing class cost, from charges that were one
        generation alone (the mean, when measured several times)."""
        samples: dict[str, list[float]] = {}
        for credits, classes in self.journal.rows("SELECT credits, classes FROM charges"):
            try:
                names = json.loads(str(classes))
            except ValueError:
                continue
            if isinstance(names, list) and len(names) == 1 and isinstance(credits, (int, float)):
                samples.setdefault(str(names[0]), []).append(float(credits))
        return {cls: sum(v) / len(v) for cls, v in samples.items()}

    def estimate(self, bodies: list[dict[str, Any]]) -> float | None:
        """The expected cost of these requests from what their classes cost before, or None
        when one of them has never been measured in this journal."""
        known = self.per_class()
        costs = [known.get(billing_class(b)) for b in bodies]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    def check_budget(self, budget: float, bodies: list[dict[str, Any]], *, with_estimate: bool) -> None:
        """Refuse (BudgetError, nothing sent) a cell once this session's measured spend, plus
        its estimate when asked, would pass `budget` credits."""
        spent = self.spend().session
        if spent is None:
            raise BudgetError(
                f"a budget of {budget:g} credits is set, but the balance cannot be read ({self.error}), so "
                "spend cannot be measured; nothing was sent. Try again, or remove the budget with "
                "%config KlingMagics.budget_credits = 0"
            )
        extra = self.estimate(bodies) if with_estimate else 0.0
        total = spent + (extra or 0.0)
        if spent >= budget or (with_estimate and total > budget):
            part = f" + an estimated {extra:g} for this cell" if with_estimate and extra else ""
            raise BudgetError(
                f"this session has spent {spent:g} credits{part}, and the budget is {budget:g}; nothing was "
                f"sent. To go on, raise it: %config KlingMagics.budget_credits = {max(budget * 2, total + 1):g}"
            )


def _drop(before: Balance | None, after: Balance) -> float | None:
    if before is None:
        return None
    return _drop_values((before.remaining_credits, before.used_credits), (after.remaining_credits, after.used_credits))


def _drop_values(before: tuple[Any, Any], after: tuple[Any, Any]) -> float | None:
    """Credits spent between two readings: the rise of `used`, else the fall of `remaining`."""
    (r0, u0), (r1, u1) = before, after
    if isinstance(u0, (int, float)) and isinstance(u1, (int, float)):
        return max(0.0, float(u1) - float(u0))
    if isinstance(r0, (int, float)) and isinstance(r1, (int, float)):
        return max(0.0, float(r0) - float(r1))
    return None


# -- keys for a class ------------------------------------------------------------------------------
def class_keys(
    client: Client, count: int, *, credits: float, out: Path, prefix: str = "student", expires: _dt.date | None = None
) -> list[str]:
    """Make `count` keys with `credits` each (and the expiry), limited to kling-video-o1, with
    the vendor's POST /v1/tokens; write them to the CSV `out` only (owner-only permissions,
    refused if it exists). Returns the keys' names, never the keys."""
    if not 1 <= count <= 500:
        raise ConfigError(f"make between 1 and 500 keys at a time, not {count}")
    if credits <= 0:
        raise ConfigError(f"each key needs a positive number of credits, not {credits:g}")
    if not prefix.replace("-", "_").isidentifier() or len(prefix) > 40:
        raise ConfigError(f"the prefix must be a short word (letters, digits, _ or -), not {prefix!r}")
    expires_at = None
    if expires is not None:
        # The end of that day, UTC: a key "valid until 2026-12-31" works on the 31st.
        expires_at = _dt.datetime.combine(expires, _dt.time(23, 59, 59), _dt.UTC).timestamp()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise ConfigError(f"{out.name} exists already: keys are never written over; choose another file") from None
    except OSError as err:
        raise ConfigError(f"cannot create {out.name}: {err.strerror}") from None
    names = []
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "key", "credits", "expires"])
        f.flush()
        for i in range(1, count + 1):
            name = f"{prefix}_{i}"
            token = client.create_token(name, credits=credits, expires_at=expires_at)
            writer.writerow([name, token.key.reveal(), f"{credits:g}", expires.isoformat() if expires else "never"])
            f.flush()  # a key made is a key kept, even if a later one fails
            names.append(name)
    return names


@dataclass(frozen=True)
class KeyUsage:
    name: str
    balance: Balance | None
    error: str = ""


def class_usage(csv_path: Path, make_client: Callable[[Secret], Client], *, workers: int = 4) -> list[KeyUsage]:
    """Each key's balance, read with a few requests at a time; the keys stay in the CSV."""
    try:
        with open(csv_path, newline="") as f:
            rows = [(r.get("name") or "?", r.get("key") or "") for r in csv.DictReader(f)]
    except OSError as err:
        raise ConfigError(f"cannot read {csv_path.name}: {err.strerror}") from None

    def one(row: tuple[str, str]) -> KeyUsage:
        name, key = row
        try:
            with make_client(Secret(key)) as client:
                return KeyUsage(name, client.balance())
        except KlingError as err:
            return KeyUsage(name, None, err.message)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kling-usage") as pool:
        return list(pool.map(one, rows))
