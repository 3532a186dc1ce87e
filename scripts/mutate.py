"""Mutation testing of the modules that hold money and secrets (`make mutate`; not part of CI).

Each run group mutates its module(s) with mutmut and runs, for every mutant, only the tests of
its own subset that call the mutated function (mutmut records which tests call which function
in a first, clean pass). Each group has its own working folder `mutants/<group>/` (mutmut's own
copy of the sources is `mutants/<group>/mutants/`), so test selections and caches never mix;
two groups run at a time (`--lanes`), because most of these tests wait rather than compute.
Results go to benchmarks/mutation.json.

    python scripts/mutate.py                 # every group, from scratch
    python scripts/mutate.py journal fields  # only these groups (the others keep their last results)
    python scripts/mutate.py --keep client   # reuse mutants/client/ (only mutants without a result run)
    python scripts/mutate.py --report        # rebuild the report (e.g. after editing a judgment)

Every surviving mutant was read. Those judged equivalent (no input a user can give tells them
from the original) are listed in EQUIVALENT below, or matched by a rule in EQUIVALENT_RULES,
each with a one-line reason; a listed judgment carries the line the mutant puts in the code,
so it goes stale (and the mutant counts as a gap again) when the code under it changes. Those
that change behaviour but are deliberately left without a test are in NOT_TESTED, with why.
Every other survivor is a gap in the tests.

What the tests import is checked to be mutmut's mutated copy (the editable install's finder
comes after sys.path); mutmut itself first runs every selected test with all functions made to
fail, and stops if nothing fails. Kernel and browser tests are never run here: they take
minutes each, so tests that use those helpers are deselected (found by what they call).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project's venv (where mutmut is installed), whichever Python runs this script.
PYTHON = ROOT / ".venv" / "bin" / "python" if (ROOT / ".venv" / "bin" / "python").exists() else Path(sys.executable)
MUTMUT = PYTHON.parent / "mutmut"
WORK = ROOT / "mutants"
RESULTS = ROOT / "benchmarks" / "mutation.json"

# mutmut's exit-code classes (mutmut.stats.status_by_exit_code, kept here so a report can be
# read without importing mutmut's CLI module).
KILLED = {1, 3}
SURVIVED = {0}
TIMEOUT = {24, -24, 152, 255, 36}
NO_TESTS = {5, 33}


@dataclass
class Module:
    path: str  # kling_nb/...py
    goal: float
    # Only mutants of these functions count (None: every function of the file). A callable
    # gets the file's source and returns the mangled names (x_func / xǁClassǁmethod).
    functions: object = None
    note: str = ""


@dataclass
class Group:
    name: str
    modules: list[Module]
    tests: list[str]
    deselect: list[str] = field(default_factory=list)
    # Parallel mutant runs. The client, journal and lifecycle tests mostly wait (on HTTP,
    # threads, timers), so they run more at once than the 2 cores; the field tests compute.
    children: int = 4
    # About how long the group takes on the 2-core machine (s): used to spread groups over lanes.
    estimate_s: float = 300.0

    def deselected(self) -> list[str]:
        found = [node for f in self.test_files() for node in slow_tests(f)]
        return found + [node for node in self.deselect if node not in found]

    def test_files(self) -> list[str]:
        """The subset, plus the mutation-driven tests written for its modules."""
        extra = []
        for m in self.modules:
            stem = Path(m.path).stem
            extra += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob(f"test_mutants_{stem}*.py"))]
        return self.tests + [t for t in extra if t not in self.tests]


# Tests that start a real kernel (nbclient) or a browser take seconds to minutes each: never
# run against mutants. They are found by what they call, so new ones are left out too.
SLOW_HELPERS = ("kernel_harness", "browser_pages", "nbclient", "playwright")


def slow_tests(test_file: str) -> list[str]:
    """The tests in `test_file` that use a kernel or browser helper (by name, in their body)."""
    tree = ast.parse((ROOT / test_file).read_text())
    slow_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(h in (node.module or "") for h in SLOW_HELPERS):
            slow_names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            slow_names |= {a.asname or a.name for a in node.names if any(h in a.name for h in SLOW_HELPERS)}
    found = []
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test"):
            used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
            if used & slow_names:
                found.append(f"{test_file}::{fn.name}")
    return found


def transition_methods(source: str) -> list[str]:
    """The Tracker methods that move a Generation from one state to another: those that call
    `._transition(`. Computed from the source so a new transition is measured without edits."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and not fn.decorator_list:
                    calls = [
                        c
                        for c in ast.walk(fn)
                        if isinstance(c, ast.Call)
                        and isinstance(c.func, ast.Attribute)
                        and c.func.attr == "_transition"
                    ]
                    if calls:
                        names.append(f"xǁ{node.name}ǁ{fn.name}")
    return names


GROUPS = [
    Group(
        "client",
        [
            Module("kling_nb/service/client.py", 0.90),
            Module("kling_nb/service/secret.py", 0.90),
        ],
        ["tests/test_client.py", "tests/test_trust_service.py", "tests/test_rules.py", "tests/test_account.py"],
        # These look for the key in the locals of every frame of a traceback, and mutmut's
        # trampolines (the wrappers that pick the mutant) hold the call's arguments in theirs.
        # tests/test_mutants_client.py repeats the check over kling_nb's own frames.
        deselect=[
            "tests/test_trust_service.py::test_a_key_with_a_control_character_inside_is_refused",
            "tests/test_trust_service.py::test_a_bad_base_url_is_one_line_and_no_frame_holds_the_key",
        ],
        children=12,
        estimate_s=1300,
    ),
    Group(
        "journal",
        [Module("kling_nb/engine/journal.py", 0.90)],
        ["tests/test_journal.py", "tests/test_trust_folder.py", "tests/test_lifecycle.py"],
        children=8,
        estimate_s=600,
    ),
    Group(
        "fields",
        [Module("kling_nb/cell/fields.py", 0.85)],
        ["tests/test_spec.py", "tests/test_sweep.py"],
        estimate_s=700,
    ),
    Group(
        "lifecycle",
        [
            Module("kling_nb/engine/generation.py", 0.85),
            Module(
                "kling_nb/engine/tracker.py",
                0.85,
                functions=transition_methods,
                note="only the methods that apply a state transition (call Generation._transition)",
            ),
        ],
        ["tests/test_lifecycle.py", "tests/test_storyboard.py"],
        children=8,
        estimate_s=1300,
    ),
    Group(
        "schedule",
        [Module("kling_nb/engine/schedule.py", 0.85)],
        ["tests/test_schedule.py", "tests/test_lifecycle.py"],
        estimate_s=100,
    ),
]

# -- judgments ---------------------------------------------------------------------------------
# Every survivor was read. The reasons, once each:
# engine/journal.py
_DAMAGED = (
    "a file that fails the read-write open as damaged fails the read-only fallback too, which raises the "
    "same 'is damaged (<SQLite's reason>)' JournalError (checked by overwriting each page of a journal)"
)
_JSON_TEXT = "every reader decodes these columns with json.loads, which gives the same dict with or without \\u escapes"
_STRICT_ZIP = (
    "a journal whose tables have other columns is refused when it is opened (Journal._check_layout), so "
    "every row read has exactly the columns zipped"
)
_JSON_SPACES = (
    "every reader decodes these columns with json.loads, so spaces after ',' and ':' change only the stored text"
)
_WRITER_ISOLATION = (
    "every write runs inside an explicit BEGIN IMMEDIATE ... COMMIT, where Python's implicit transactions "
    "(begun only before a write outside one) never start"
)
_EMPTY_JSON = "an empty column still reads as {}: the bad default fails to parse and the except returns {}"
_READ_ONLY_FLAG = "read_only is only ever tested for truth, and None is as false as False"
_URI = (
    "this SQLite (3.40, Debian) reads `file:` names as URIs with or without uri=True (SQLITE_USE_URI), so "
    "the same database opens"
)
_RO_ISOLATION = "a read-only connection only runs SELECTs, which never begin an implicit transaction"
_BUSY = "the PRAGMA busy_timeout=30000 run right after the connect sets the same 30 s wait"
_KEEP_ALIVE = (
    "the in-memory keep-alive connection is never used, nor closed, from another thread: it only keeps the "
    "empty read-only database alive"
)

# cell/fields.py
_HEADER_NAME = (
    "a top-level key that is not a known field is refused before any value is checked, so the check never "
    "names the header as a whole"
)
_VALUE_NAME = "strings are only filled in below a key, so their path is never empty and this name is never used"
_VIDEO_DEFAULT = "every caller passes video= explicitly"
_READ_PIECES = (
    "the head is only sniffed (its first 12 bytes) and the whole file is hashed in order, so reading it in "
    "other pieces changes nothing"
)
_RE_I = "the match is case-insensitive (re.I), so the pattern's own letter case changes nothing"
_COUNT_NONE = "str.count reads a start of None as 0"
_STRIPPED = (
    "a prompt written after `---` is stripped (its line number moved to its first line) and a `prompt:` "
    "value has no line, so a prompt with a line never starts with a line break"
)
_SAME_LENGTH = "the two lists zipped are a list and its sorted copy: always the same length"
_BEST_MATCH = "only the best match (guess[0]) is used; asking for more matches does not change it"
_NO_WORD = "yes/no words are read case-insensitively, so 'NO' means no as 'no' does"

# service/client.py and service/secret.py
_ARGS_ALWAYS = "every exception has .args, so the default is never used"
_SNIFF = "the image and video signatures are read from at most the first 12 bytes"
_HEADER_CASE = "header names are case-insensitive: requests' header dicts match them in any case, and so does HTTP"
_BAD_DEFAULT = "an absent header and this default both fail to parse, so both read as no value"
_NO_WORDS = "the default text contains none of the words looked for, like the empty one"
_PROC = "Linux always shows Umask: in /proc/self/status, so the fallback umask is never used here"
_PART_EXISTS = "the temporary file always still exists when this clean-up runs, so missing_ok never matters"
_FALSY = "the value is only ever tested for truth, and None is as false as False"
_DIR_SAME = (
    "for a destination that is not a file both forms end in 'not the same bytes' (a folder fails the open, "
    "which counts as different)"
)
_METHOD_CASE = "requests sends the method in capitals whatever its case here"
_NOT_A_DICT = "an unreadable body gives no dict either way, and only a dict is read"
_WHAT_UNUSED = "_exchange hands `what` to nothing that is shown (the reader's messages do not use it)"
_LOCATION = (
    "a reply counts as a redirect only when it has a Location header (requests' is_redirect), so the default "
    "is never used"
)
_HAS_HOST = "every URL requested has a host (the base URL and video URLs are checked first), so '?' never shows"
_TOKEN_READ = (
    "NewToken.from_json raises ValueError only for a reply without a usable key, which is answered before this"
)
_AUTH_DEFAULT = "auth=True is _exchange's default"
_LAST_ATTEMPT = "the last attempt always returns or raises, so one more turn of the loop is never taken"
_UNREACHABLE = "unreachable: the loop above always returns or raises"
_NO_ATTEMPT = "only reached with a negative max_retries, when no attempt is made at all"
_SIG_WAIT = (
    "the signature is judged on the first 16 bytes either way; waiting for one byte more before judging saves "
    "the same file"
)
_HEAD_DONE = "once the file is created the head is not read again"
_QUOTE = "task ids holding '/' are refused before, and 'X' is never quoted, so the URL is the same"
_TIMER = (
    "the timer fires only after the end time, so `fired` already implies remaining() <= 0; the instant between "
    "cannot be observed"
)
_REASON_ONLY = "only .reason is ever read, never the exception's args"
_OWN_WORDS = "every caller turns this ValueError into its own words; its text is never shown"
_POOL_KWARGS = "requests passes the pool sizes positionally; the only keyword is block=False, urllib3's default"
_DEADLINE_SET = "every request of this client sets the thread's deadline before a connection sends"
_POOL_HOSTS = "pool_connections is how many hosts' pools are kept (the API and a CDN), not a limit on requests"
_ADAPTER_RETRIES = "requests' adapter makes no retries by default either"
_MOUNT_CASE = "requests matches mount prefixes case-insensitively"
_POOL_SIZE = "one pooled connection more than 32 is never used: the tracker runs 8 workers"
# engine/generation.py and the transitions of engine/tracker.py
_INSTANT = "waits are checked in 0.2 s slices; the instant the clock equals the end cannot be observed"
_THUMB_FIELD = "TaskStatus always has a thumbnail_url field, so the default is never used"
_ALREADY_100 = "every path to COMPLETED passes DOWNLOADING at progress 100 first"
_COMPLETED_NO_LOOK = (
    "the count of missed looks is read only when the next look is planned, and a completed task gets no next look"
)
_FINAL_DEFAULT = "final=True is record_error's default"
_FORCE_NOT_NEEDED = (
    "the old record was just marked failed, and begin() sends a failed request again without force anyway"
)
_FILM_IDENTITY = "every film the session makes has an identity ('film:' + a hash), so the fallback is never used"
_NO_URLS = "with no URL to put in, with_urls gives the same body"
_ALREADY_CLEARED = "every path into a submit has already cleared the task id and progress (new, or restarted)"
_SAME_BODY = "the generation is always made from the same body as the record (the identity is the body's hash)"
_NEVER_COMPLETED = "a completed record is reused, never re-attached, so the completed branch is never taken"
_FETCH_NO_POLL = "a fetch only downloads; the start time is read only by polls, against the deadline"

# Surviving mutants judged equivalent: mutant name -> (the mutated line, as mutmut shows it
# after "+", stripped; one-line reason). A judgment whose line no longer matches is stale and
# the mutant is reported as a gap again.
EQUIVALENT: dict[str, tuple[str, str]] = {
    "kling_nb.engine.tracker.xǁTrackerǁ_apply__mutmut_91": (
        'thumbnail_url=getattr(task, "thumbnail_url", ),',
        _THUMB_FIELD,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_detach__mutmut_4": (
        'entry.backend.journal.record_error(entry.record_id, getattr(err, "code", None), err.message, final=None)',
        _FALSY,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_download__mutmut_32": ("self._fail(entry, err, final=None)", _FALSY),
    "kling_nb.engine.tracker.xǁTrackerǁ_download__mutmut_54": (
        "gen._transition(State.COMPLETED, video_path=path, poster_path=frames.ensure_poster(path))",
        _ALREADY_100,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_download__mutmut_7": (
        "self._fail(entry, expired_error(gen.task_id, gen.expires_at), final=None)",
        _FALSY,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_poll__mutmut_41": (
        'if entry.expects_done or task.status != "completed":',
        _COMPLETED_NO_LOOK,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_poll__mutmut_43": (
        'if not entry.expects_done or task.status != "XXcompletedXX":',
        _COMPLETED_NO_LOOK,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_poll__mutmut_44": (
        'if not entry.expects_done or task.status != "COMPLETED":',
        _COMPLETED_NO_LOOK,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_restart_simulated__mutmut_10": (
        'entry.record_id, "simulator_restarted", "the simulator that ran this task has stopped", )',
        _FINAL_DEFAULT,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_restart_simulated__mutmut_21": (
        "gen.identity, gen.request.body, name=gen.name, label=gen.label, force=None, run_id=gen.run_id",
        _FORCE_NOT_NEEDED,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_restart_simulated__mutmut_27": (
        "gen.identity, gen.request.body, name=gen.name, label=gen.label, run_id=gen.run_id",
        _FORCE_NOT_NEEDED,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_restart_simulated__mutmut_29": (
        "gen.identity, gen.request.body, name=gen.name, label=gen.label, force=False, run_id=gen.run_id",
        _FORCE_NOT_NEEDED,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_stitch__mutmut_21": (
        'dest = video_path_for(b.output_dir, f"{gen.name or \'film\'}-film", (gen.identity or "XXXX")[-12:])',
        _FILM_IDENTITY,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_submit__mutmut_44": (
        "body = gen.request.with_urls(urls, resolved) if (urls or resolved) or True else gen.request.body",
        _NO_URLS,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_submit__mutmut_55": (
        "gen._transition(State.SUBMITTING, body=body, progress=0)",
        _ALREADY_CLEARED,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_submit__mutmut_56": (
        "gen._transition(State.SUBMITTING, body=body, task_id=None, )",
        _ALREADY_CLEARED,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁ_submit__mutmut_73": ("entry.submitting = None", _FALSY),
    "kling_nb.engine.tracker.xǁTrackerǁattach__mutmut_21": ("(line removed)", _SAME_BODY),
    "kling_nb.engine.tracker.xǁTrackerǁattach__mutmut_25": (
        'state_for_service(record.status) if (record.status != "completed") or True else State.QUEUED,',
        _NEVER_COMPLETED,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁattach__mutmut_28": (
        'state_for_service(record.status) if record.status != "XXcompletedXX" else State.QUEUED,',
        _NEVER_COMPLETED,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁattach__mutmut_29": (
        'state_for_service(record.status) if record.status != "COMPLETED" else State.QUEUED,',
        _NEVER_COMPLETED,
    ),
    "kling_nb.engine.tracker.xǁTrackerǁawait_submit__mutmut_6": ("(line removed)", _SAME_BODY),
    "kling_nb.engine.tracker.xǁTrackerǁfetch__mutmut_11": ("entry = _Entry(gen, backend, record.id, )", _FETCH_NO_POLL),
    "kling_nb.engine.tracker.xǁTrackerǁfetch__mutmut_22": ("(line removed)", _SAME_BODY),
    "kling_nb.engine.tracker.xǁTrackerǁfetch__mutmut_7": (
        "entry = _Entry(gen, backend, record.id, started=None)",
        _FETCH_NO_POLL,
    ),
    "kling_nb.engine.generation.xǁGenerationǁwait__mutmut_11": (
        "if end is not None and time.monotonic() > end:",
        _INSTANT,
    ),
    "kling_nb.service.client.x__causes__mutmut_16": (
        'todo += [a for a in getattr(e, "args", None) if isinstance(a, BaseException)]',
        _ARGS_ALWAYS,
    ),
    "kling_nb.service.client.x__causes__mutmut_19": (
        'todo += [a for a in getattr(e, "args", ) if isinstance(a, BaseException)]',
        _ARGS_ALWAYS,
    ),
    "kling_nb.service.client.x__check_signature__mutmut_2": ("if sniff_video(head[:17]) is None:", _SNIFF),
    "kling_nb.service.client.x__content_length__mutmut_5": (
        'value = (headers.get("content-length") or "").strip()',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.x__content_length__mutmut_6": (
        'value = (headers.get("CONTENT-LENGTH") or "").strip()',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.x__content_length__mutmut_7": (
        'value = (headers.get("Content-Length") or "XXXX").strip()',
        _BAD_DEFAULT,
    ),
    "kling_nb.service.client.x__file_mode__mutmut_2": ("umask = None", _PROC),
    "kling_nb.service.client.x__file_mode__mutmut_3": ("umask = 19", _PROC),
    "kling_nb.service.client.x__never_connected__mutmut_9": (
        'text = repr(err.args[0]) if err.args else "XXXX"',
        _NO_WORDS,
    ),
    "kling_nb.service.client.x__place__mutmut_10": ("part.unlink(missing_ok=None)", _PART_EXISTS),
    "kling_nb.service.client.x__place__mutmut_11": ("part.unlink(missing_ok=False)", _PART_EXISTS),
    "kling_nb.service.client.x__probe_video__mutmut_12": ("playable = None", _FALSY),
    "kling_nb.service.client.x__retry_after__mutmut_7": ('value = headers.get("retry-after", "")', _HEADER_CASE),
    "kling_nb.service.client.x__retry_after__mutmut_8": ('value = headers.get("RETRY-AFTER", "")', _HEADER_CASE),
    "kling_nb.service.client.x__retry_after__mutmut_9": ('value = headers.get("Retry-After", "XXXX")', _BAD_DEFAULT),
    "kling_nb.service.client.x__same_bytes__mutmut_1": (
        "if not a.is_file() and a.stat().st_size != b.stat().st_size:",
        _DIR_SAME,
    ),
    "kling_nb.service.client.xǁClientǁ__init____mutmut_62": (
        "adapter = _WatchedAdapter(pool_maxsize=32, max_retries=0)",
        _POOL_HOSTS,
    ),
    "kling_nb.service.client.xǁClientǁ__init____mutmut_64": (
        "adapter = _WatchedAdapter(pool_connections=4, pool_maxsize=32, )",
        _ADAPTER_RETRIES,
    ),
    "kling_nb.service.client.xǁClientǁ__init____mutmut_65": (
        "adapter = _WatchedAdapter(pool_connections=5, pool_maxsize=32, max_retries=0)",
        _POOL_HOSTS,
    ),
    "kling_nb.service.client.xǁClientǁ__init____mutmut_66": (
        "adapter = _WatchedAdapter(pool_connections=4, pool_maxsize=33, max_retries=0)",
        _POOL_SIZE,
    ),
    "kling_nb.service.client.xǁClientǁ__init____mutmut_79": ('self.session.mount("HTTPS://", adapter)', _MOUNT_CASE),
    "kling_nb.service.client.xǁClientǁ__init____mutmut_80": (
        "self.session.trust_env = None  # no netrc/proxy auth surprises with the key",
        _FALSY,
    ),
    "kling_nb.service.client.xǁClientǁ_auth__mutmut_7": (
        'return {"authorization": "Bearer " + self._key.reveal()}',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_auth__mutmut_8": (
        'return {"AUTHORIZATION": "Bearer " + self._key.reveal()}',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_balance__mutmut_11": (
        'data = self._retrying(what, "get", self.base_url + path, limit_s=self.max_request_s)',
        _METHOD_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_error__mutmut_3": ('data = ""', _NOT_A_DICT),
    "kling_nb.service.client.xǁClientǁ_exchange__mutmut_27": (
        "body = _read_capped(resp, deadline, self.max_json_bytes, None, strict=strict)",
        _WHAT_UNUSED,
    ),
    "kling_nb.service.client.xǁClientǁ_fetch__mutmut_22": (
        '"get", url, deadline, auth=self._same_origin(url), headers={"Accept-Encoding": "identity"}',
        _METHOD_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_fetch__mutmut_25": (
        '"GET", url, deadline, auth=self._same_origin(url), headers={"accept-encoding": "identity"}',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_fetch__mutmut_26": (
        '"GET", url, deadline, auth=self._same_origin(url), headers={"ACCEPT-ENCODING": "identity"}',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_fetch__mutmut_38": (
        'url = urljoin(url, resp.headers.get("Location", None))',
        _LOCATION,
    ),
    "kling_nb.service.client.xǁClientǁ_fetch__mutmut_40": (
        'url = urljoin(url, resp.headers.get("Location", ))',
        _LOCATION,
    ),
    "kling_nb.service.client.xǁClientǁ_fetch__mutmut_42": (
        'url = urljoin(url, resp.headers.get("location", ""))',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_fetch__mutmut_43": (
        'url = urljoin(url, resp.headers.get("LOCATION", ""))',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_fetch__mutmut_44": (
        'url = urljoin(url, resp.headers.get("Location", "XXXX"))',
        _LOCATION,
    ),
    "kling_nb.service.client.xǁClientǁ_host__mutmut_3": (
        'return urlsplit(self.base_url).hostname or "XX?XX"',
        _HAS_HOST,
    ),
    "kling_nb.service.client.xǁClientǁ_made_token__mutmut_70": ("raise _token_unknown(None) from None", _TOKEN_READ),
    "kling_nb.service.client.xǁClientǁ_open__mutmut_18": ("allow_redirects=None,", _FALSY),
    "kling_nb.service.client.xǁClientǁ_open__mutmut_43": (
        "raise _NoConnection(f\"could not connect to {urlsplit(url).hostname or 'XX?XX'}\") from None",
        _HAS_HOST,
    ),
    "kling_nb.service.client.xǁClientǁ_open__mutmut_48": (
        "raise _NotSent(f\"the TLS certificate of {urlsplit(url).hostname or 'XX?XX'} was not accepted\") from None",
        _HAS_HOST,
    ),
    "kling_nb.service.client.xǁClientǁ_open__mutmut_61": ('_watched.deadline = ""', _DEADLINE_SET),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_16": ("(line removed)", _AUTH_DEFAULT),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_20": ('"post",', _METHOD_CASE),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_23": (
        'headers={"content-type": "application/json"},',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_24": (
        'headers={"CONTENT-TYPE": "application/json"},',
        _HEADER_CASE,
    ),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_3": (
        "for attempt in range(self.max_retries + 2):",
        _LAST_ATTEMPT,
    ),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_51": (
        "raise AssertionError(None)  # pragma: no cover",
        _UNREACHABLE,
    ),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_52": (
        'raise AssertionError("XXunreachableXX")  # pragma: no cover',
        _UNREACHABLE,
    ),
    "kling_nb.service.client.xǁClientǁsubmit__mutmut_3": (
        "payload = json.dumps(body, allow_nan=None).encode()",
        "json.dumps reads allow_nan for truth only, and None is as false as False (NaN still refused)",
    ),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_53": (
        'raise AssertionError("UNREACHABLE")  # pragma: no cover',
        _UNREACHABLE,
    ),
    "kling_nb.service.client.xǁClientǁ_post_once__mutmut_7": ("what=None,", _WHAT_UNUSED),
    "kling_nb.service.client.xǁClientǁ_retrying__mutmut_1": ('last: KlingError | None = ""', _NO_ATTEMPT),
    "kling_nb.service.client.xǁClientǁ_retrying__mutmut_9": (
        "reply = self._exchange(method, url, what=None, limit_s=limit_s, **kwargs)",
        _WHAT_UNUSED,
    ),
    "kling_nb.service.client.xǁClientǁ_save__mutmut_18": ("if len(head) <= 16:", _SIG_WAIT),
    "kling_nb.service.client.xǁClientǁ_save__mutmut_19": ("if len(head) < 17:", _SIG_WAIT),
    "kling_nb.service.client.xǁClientǁ_save__mutmut_25": ('chunk, head = head, b"XXXX"', _HEAD_DONE),
    "kling_nb.service.client.xǁClientǁ_save__mutmut_69": ("part.unlink(missing_ok=None)", _PART_EXISTS),
    "kling_nb.service.client.xǁClientǁ_save__mutmut_70": ("part.unlink(missing_ok=False)", _PART_EXISTS),
    "kling_nb.service.client.xǁClientǁdownload__mutmut_11": ('last: KlingError | None = ""', _NO_ATTEMPT),
    "kling_nb.service.client.xǁClientǁdownload__mutmut_44": (
        "raise DownloadError(f\"could not download the video: {last.message if (last) or True else 'unknown error'}\")",
        _NO_ATTEMPT,
    ),
    "kling_nb.service.client.xǁClientǁdownload__mutmut_45": (
        "raise DownloadError(f\"could not download the video: {last.message if last else 'XXunknown errorXX'}\")",
        _NO_ATTEMPT,
    ),
    "kling_nb.service.client.xǁClientǁdownload__mutmut_46": (
        "raise DownloadError(f\"could not download the video: {last.message if last else 'UNKNOWN ERROR'}\")",
        _NO_ATTEMPT,
    ),
    "kling_nb.service.client.xǁClientǁstatus__mutmut_12": (
        "url = self.base_url + STATUS_PATH.format(task_id=quote(task_id, ))",
        _QUOTE,
    ),
    "kling_nb.service.client.xǁClientǁstatus__mutmut_13": (
        'url = self.base_url + STATUS_PATH.format(task_id=quote(task_id, safe="XXXX"))',
        _QUOTE,
    ),
    "kling_nb.service.client.xǁClientǁstatus__mutmut_26": (
        'data = self._retrying("status", "get", url, limit_s=self.max_request_s)',
        _METHOD_CASE,
    ),
    "kling_nb.service.client.xǁClientǁupload__mutmut_32": ("mime = sniff_image(data[:17])", _SNIFF),
    "kling_nb.service.client.xǁClientǁupload__mutmut_51": ('"post",', _METHOD_CASE),
    "kling_nb.service.client.xǁ_Deadlineǁ__init____mutmut_2": ("self.fired = None", _FALSY),
    "kling_nb.service.client.xǁ_Deadlineǁpassed__mutmut_1": ("return self.fired and self.remaining() <= 0", _TIMER),
    "kling_nb.service.client.xǁ_Deadlineǁpassed__mutmut_2": ("return self.fired or self.remaining() < 0", _TIMER),
    "kling_nb.service.client.xǁ_Failureǁ__init____mutmut_1": ("super().__init__(None)", _REASON_ONLY),
    "kling_nb.service.client.xǁ_Replyǁjson__mutmut_2": ("raise ValueError(None) from None", _OWN_WORDS),
    "kling_nb.service.client.xǁ_Replyǁjson__mutmut_3": (
        'raise ValueError("XXthe reply nests too deeplyXX") from None',
        _OWN_WORDS,
    ),
    "kling_nb.service.client.xǁ_Replyǁjson__mutmut_4": (
        'raise ValueError("THE REPLY NESTS TOO DEEPLY") from None',
        _OWN_WORDS,
    ),
    "kling_nb.service.client.xǁ_WatchedAdapterǁinit_poolmanager__mutmut_2": (
        "super().init_poolmanager(*args, )",
        _POOL_KWARGS,
    ),
    "kling_nb.service.client.xǁ_WatchedHTTPConnectionǁ_hand_to_deadline__mutmut_6": (
        'deadline = getattr(_watched, "deadline", )',
        _DEADLINE_SET,
    ),
    "kling_nb.service.client.xǁ_WatchedHTTPConnectionǁ_hand_to_deadline__mutmut_9": (
        "if deadline is not None or self.sock is not None:",
        _DEADLINE_SET,
    ),
    "kling_nb.service.secret.xǁSecretǁ__init____mutmut_28": ('problem = ""', _FALSY),
    "kling_nb.cell.fields.x__check_values__mutmut_10": ('field = ".".join(map(str, path)) or "HEADER"', _HEADER_NAME),
    "kling_nb.cell.fields.x__check_values__mutmut_9": (
        'field = ".".join(map(str, path)) or "XXheaderXX"',
        _HEADER_NAME,
    ),
    "kling_nb.cell.fields.x__interpolate__mutmut_16": (
        'return _format(value, namespace, ".".join(map(str, path)) or "XXvalueXX", lines.of(*path))',
        _VALUE_NAME,
    ),
    "kling_nb.cell.fields.x__interpolate__mutmut_17": (
        'return _format(value, namespace, ".".join(map(str, path)) or "VALUE", lines.of(*path))',
        _VALUE_NAME,
    ),
    "kling_nb.cell.fields.x__media__mutmut_1": ("video: bool = True,", _VIDEO_DEFAULT),
    "kling_nb.cell.fields.x__media__mutmut_113": ("head = f.read(None)", _READ_PIECES),
    "kling_nb.cell.fields.x__media__mutmut_114": ("head = f.read(65)", _READ_PIECES),
    "kling_nb.cell.fields.x__media__mutmut_121": ('for chunk in iter(lambda: f.read(None), b""):', _READ_PIECES),
    "kling_nb.cell.fields.x__media__mutmut_123": ('for chunk in iter(lambda: f.read(2 << 20), b""):', _READ_PIECES),
    "kling_nb.cell.fields.x__media__mutmut_124": ('for chunk in iter(lambda: f.read(1 << 21), b""):', _READ_PIECES),
    "kling_nb.cell.fields.x__media__mutmut_35": ('if re.match(r"^HTTPS?://", value, re.I):', _RE_I),
    "kling_nb.cell.fields.x__media__mutmut_44": ('if not re.match(r"^HTTPS?://[^\\s/?#]+", value, re.I):', _RE_I),
    "kling_nb.cell.fields.x__placeholders__mutmut_12": (
        'return None if prompt_line is None else prompt_line + prompt.count("\\n", 1, match.start())',
        _STRIPPED,
    ),
    "kling_nb.cell.fields.x__placeholders__mutmut_6": (
        'return None if prompt_line is None else prompt_line + prompt.count("\\n", None, match.start())',
        _COUNT_NONE,
    ),
    "kling_nb.cell.fields.x__placeholders__mutmut_92": (
        "and int(m.group(2)) == next(a for a, n in zip(order, sorted(order), strict=None) if a != n)",
        _SAME_LENGTH,
    ),
    "kling_nb.cell.fields.x__placeholders__mutmut_95": (
        "and int(m.group(2)) == next(a for a, n in zip(order, sorted(order), ) if a != n)",
        _SAME_LENGTH,
    ),
    "kling_nb.cell.fields.x__placeholders__mutmut_97": (
        "and int(m.group(2)) == next(a for a, n in zip(order, sorted(order), strict=False) if a != n)",
        _SAME_LENGTH,
    ),
    "kling_nb.cell.fields.x__unknown__mutmut_7": (
        "guess = difflib.get_close_matches(str(key), allowed, )",
        _BEST_MATCH,
    ),
    "kling_nb.cell.fields.x__unknown__mutmut_9": (
        "guess = difflib.get_close_matches(str(key), allowed, n=2)",
        _BEST_MATCH,
    ),
    "kling_nb.cell.fields.x__videos__mutmut_133": (
        'item.get("keep_original_sound", "NO"), f"videos[{i}].keep_original_sound", line',
        _NO_WORD,
    ),
    "kling_nb.engine.journal.x__damaged__mutmut_10": (
        'return "not a database" in text or "MALFORMED" in text or "corrupt" in text',
        _DAMAGED,
    ),
    "kling_nb.engine.journal.x__damaged__mutmut_12": (
        'return "not a database" in text or "malformed" in text or "XXcorruptXX" in text',
        _DAMAGED,
    ),
    "kling_nb.engine.journal.x__damaged__mutmut_13": (
        'return "not a database" in text or "malformed" in text or "CORRUPT" in text',
        _DAMAGED,
    ),
    "kling_nb.engine.journal.x__damaged__mutmut_2": ("text = str(err).upper()", _DAMAGED),
    "kling_nb.engine.journal.x__damaged__mutmut_3": ("text = str(None).lower()", _DAMAGED),
    "kling_nb.engine.journal.x__damaged__mutmut_4": (
        'return "not a database" in text or "malformed" in text and "corrupt" in text',
        _DAMAGED,
    ),
    "kling_nb.engine.journal.x__damaged__mutmut_5": (
        'return "not a database" in text and "malformed" in text or "corrupt" in text',
        _DAMAGED,
    ),
    "kling_nb.engine.journal.x__damaged__mutmut_6": (
        'return "XXnot a databaseXX" in text or "malformed" in text or "corrupt" in text',
        _DAMAGED,
    ),
    "kling_nb.engine.journal.x__damaged__mutmut_7": (
        'return "NOT A DATABASE" in text or "malformed" in text or "corrupt" in text',
        _DAMAGED,
    ),
    "kling_nb.engine.journal.x__damaged__mutmut_9": (
        'return "not a database" in text or "XXmalformedXX" in text or "corrupt" in text',
        _DAMAGED,
    ),
    "kling_nb.engine.journal.x__json__mutmut_10": (
        'return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))',
        _JSON_TEXT,
    ),
    "kling_nb.engine.journal.x__json__mutmut_3": (
        'return json.dumps(value, sort_keys=True, ensure_ascii=None, separators=(",", ":"))',
        _JSON_TEXT,
    ),
    "kling_nb.engine.journal.x__json__mutmut_7": (
        'return json.dumps(value, sort_keys=True, separators=(",", ":"))',
        _JSON_TEXT,
    ),
    "kling_nb.engine.journal.x__json_dict__mutmut_4": ('value = json.loads(text or "XX{}XX")', _EMPTY_JSON),
    "kling_nb.engine.journal.xǁJournalǁ__init____mutmut_7": ("self._closed = None", _FALSY),
    "kling_nb.engine.journal.xǁJournalǁ_db__mutmut_30": (
        "db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)",
        _WRITER_ISOLATION,
    ),
    "kling_nb.engine.journal.x__record__mutmut_5": ("data = dict(zip(_COLUMNS, row, strict=None))", _STRICT_ZIP),
    "kling_nb.engine.journal.x__record__mutmut_8": ("data = dict(zip(_COLUMNS, row, ))", _STRICT_ZIP),
    "kling_nb.engine.journal.x__record__mutmut_9": ("data = dict(zip(_COLUMNS, row, strict=False))", _STRICT_ZIP),
    "kling_nb.engine.journal.x__json__mutmut_4": (
        "return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=None)",
        _JSON_SPACES,
    ),
    "kling_nb.engine.journal.x__json__mutmut_8": (
        "return json.dumps(value, sort_keys=True, ensure_ascii=False, )",
        _JSON_SPACES,
    ),
    "kling_nb.engine.journal.xǁJournalǁ__init____mutmut_21": ("if _damaged(None):", _DAMAGED),
    "kling_nb.engine.journal.xǁJournalǁ__init____mutmut_10": ("self.read_only = None", _READ_ONLY_FLAG),
    "kling_nb.engine.journal.xǁJournalǁ_db__mutmut_16": (
        "db = sqlite3.connect(self._uri, uri=None, isolation_level=None, check_same_thread=False)",
        _URI,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_db__mutmut_19": (
        "db = sqlite3.connect(self._uri, isolation_level=None, check_same_thread=False)",
        _URI,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_db__mutmut_20": (
        "db = sqlite3.connect(self._uri, uri=True, check_same_thread=False)",
        _RO_ISOLATION,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_db__mutmut_22": (
        "db = sqlite3.connect(self._uri, uri=False, isolation_level=None, check_same_thread=False)",
        _URI,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_db__mutmut_29": (
        "db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)",
        _BUSY,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_db__mutmut_32": (
        "db = sqlite3.connect(self.path, timeout=31.0, isolation_level=None, check_same_thread=False)",
        _BUSY,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_open_read_only__mutmut_12": (
        "self._keep_alive = sqlite3.connect(self._uri, check_same_thread=False)",
        _URI,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_open_read_only__mutmut_13": (
        "self._keep_alive = sqlite3.connect(self._uri, uri=True, )",
        _KEEP_ALIVE,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_open_read_only__mutmut_14": (
        "self._keep_alive = sqlite3.connect(self._uri, uri=False, check_same_thread=False)",
        _URI,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_open_read_only__mutmut_15": (
        "self._keep_alive = sqlite3.connect(self._uri, uri=True, check_same_thread=True)",
        _KEEP_ALIVE,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_open_read_only__mutmut_9": (
        "self._keep_alive = sqlite3.connect(self._uri, uri=None, check_same_thread=False)",
        _URI,
    ),
}

# Surviving mutants that do change behaviour but are deliberately left without a test: mutant
# name -> (the mutated line, why). Reported among the gaps, with the reason.
_SORTED = (
    "changes only the key order of a body or label read back from the journal (shown by `%kling resume`); "
    "no behaviour relies on the sorted order, so a test would pin an accident"
)
_SECOND_CLOSE = (
    "differs only when close() runs twice and a worker thread ends in between: its connection is then left "
    "to the garbage collector instead of being closed by the second close()"
)
_CAUSE_CAP = "the cap of 32 causes only bounds a pathological chain of exceptions; a test would pin the constant"
_UNREADABLE = "needs a destination file the process cannot read; the suite runs as root, which can read any file"
_WATCH_RACE = (
    "needs the whole request limit to pass while the connection is being made; not reproducible without a slow network"
)
_TIMER_RACE = (
    "differs only when the timer is already firing as the request ends (cancel() has come too late); that "
    "instant cannot be arranged in a test"
)
_LATE_CHUNK = (
    "reached only when the limit passes between two chunks before the timer has shut the socket (a window of "
    "microseconds); the tests reach the two other raises with the same words"
)
_PIECE_SIZE = "a read a few bytes bigger only changes how far past the cap one read goes; 16 KiB is not behaviour"
NOT_TESTED: dict[str, tuple[str, str]] = {
    "kling_nb.service.client.x__causes__mutmut_4": ("while todo and len(seen) <= 32:", _CAUSE_CAP),
    "kling_nb.service.client.x__causes__mutmut_5": ("while todo and len(seen) < 33:", _CAUSE_CAP),
    "kling_nb.service.client.x__read_capped__mutmut_24": ("raise _Broken(None)", _LATE_CHUNK),
    "kling_nb.service.client.x__same_bytes__mutmut_31": ("return True", _UNREADABLE),
    "kling_nb.service.client.xǁ_Deadlineǁ__exit____mutmut_1": ('self._sock = ""', _TIMER_RACE),
    "kling_nb.service.client.xǁ_Deadlineǁwatch__mutmut_3": ("_shut(None)", _WATCH_RACE),
    "kling_nb.engine.journal.x__json__mutmut_2": (
        'return json.dumps(value, sort_keys=None, ensure_ascii=False, separators=(",", ":"))',
        _SORTED,
    ),
    "kling_nb.engine.journal.x__json__mutmut_6": (
        'return json.dumps(value, ensure_ascii=False, separators=(",", ":"))',
        _SORTED,
    ),
    "kling_nb.engine.journal.x__json__mutmut_9": (
        'return json.dumps(value, sort_keys=False, ensure_ascii=False, separators=(",", ":"))',
        _SORTED,
    ),
    "kling_nb.engine.journal.xǁJournalǁ_drop_connections__mutmut_7": (
        "self._all = [pair for pair in self._all if pair in safe]",
        _SECOND_CLOSE,
    ),
}

_SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|WHERE|VALUES|ORDER BY|COALESCE|PRAGMA|BEGIN|COMMIT|ROLLBACK|NULL|FROM)\b"
)
_QUOTED = re.compile(r"'[^']*'")


def sql_case_only(original: str, mutated: str) -> bool:
    """The mutant only changes the letter case of SQL text, outside its quoted values."""
    return (
        original != mutated
        and original.lower() == mutated.lower()
        and bool(_SQL_WORDS.search(original))
        and _QUOTED.findall(original) == _QUOTED.findall(mutated)
    )


# Judgments that hold for a whole class of mutants: (test on the original and mutated lines, reason)
EQUIVALENT_RULES = [
    (
        sql_case_only,
        "only the letter case of SQL keywords, table or column names changes (SQLite reads them "
        "case-insensitively); the quoted values are the same",
    ),
]


# -- configuration ---------------------------------------------------------------------------
def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def without_mutmut_table(text: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.strip().startswith("["):
            skipping = line.strip() == "[tool.mutmut]"
        if not skipping:
            out.append(line)
    return "".join(out)


def group_pyproject(group: Group) -> str:
    """The project's pyproject.toml (pytest reads its settings from it too) with the shared
    [tool.mutmut] settings plus this group's files and tests."""
    text = (ROOT / "pyproject.toml").read_text()
    shared = tomllib.loads(text).get("tool", {}).get("mutmut", {})
    cfg = dict(shared)
    cfg["source_paths"] = ["kling_nb"]
    cfg["only_mutate"] = [m.path for m in group.modules]
    selection = list(group.test_files())
    for node in group.deselected():
        selection += ["--deselect", node]
    cfg["pytest_add_cli_args_test_selection"] = selection
    cfg["use_git_change_detection"] = False  # the working folder is not the repository
    table = "\n[tool.mutmut]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in cfg.items())
    return without_mutmut_table(text).rstrip("\n") + "\n" + table


def prepare(group: Group, keep: bool) -> Path:
    work = WORK / group.name
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("kling_nb", "tests"):
        link = work / name
        if not link.exists():
            link.symlink_to(Path("..") / ".." / name)
    (work / "pyproject.toml").write_text(group_pyproject(group))
    return work


# -- results ---------------------------------------------------------------------------------
def module_name(path: str) -> str:
    return path[: -len(".py")].replace("/", ".")


def selected_functions(module: Module) -> list[str] | None:
    if module.functions is None:
        return None
    return module.functions((ROOT / module.path).read_text())  # type: ignore[operator]


def mutant_globs(group: Group) -> list[str]:
    """Mutant-name patterns for `mutmut run` (empty: every mutant of the group's files)."""
    if all(m.functions is None for m in group.modules):
        return []
    globs = []
    for m in group.modules:
        fns = selected_functions(m)
        prefix = module_name(m.path)
        globs += [f"{prefix}.*"] if fns is None else [f"{prefix}.{fn}__mutmut_*" for fn in fns]
    return globs


def load_exit_codes(work: Path, module: Module) -> dict[str, int | None]:
    meta = work / "mutants" / (module.path + ".meta")
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    fns = selected_functions(module)
    if fns is not None:
        prefix = module_name(module.path) + "."
        codes = {k: v for k, v in codes.items() if k[len(prefix) :].partition("__mutmut_")[0] in fns}
    return codes


DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
path, names = sys.argv[1], json.loads(sys.stdin.read())
print(json.dumps({n: get_diff_for_mutant(n, path=path) for n in names}))
"""


def mutant_diffs(work: Path, module: Module, names: list[str]) -> dict[str, str]:
    """Each mutant's diff against the original (what `mutmut show` prints), in one process."""
    if not names:
        return {}
    out = subprocess.run(
        [str(PYTHON), "-c", DIFFS, module.path],
        cwd=work,
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    diffs: dict[str, str] = json.loads(out)
    # keep the hunk: drop the ---/+++ file lines and the @@ line
    return {n: "\n".join(x for x in d.splitlines() if not x.startswith(("---", "+++", "@@"))) for n, d in diffs.items()}


def added_line(diff: str) -> str:
    plus = [line[1:].strip() for line in diff.splitlines() if line.startswith("+")]
    return " / ".join(plus) if plus else "(line removed)"


def source_line(diff: str) -> str:
    minus = [line[1:].strip() for line in diff.splitlines() if line.startswith("-")]
    return " / ".join(minus)


def summarize(work: Path, module: Module) -> dict[str, object]:
    codes = load_exit_codes(work, module)
    counts = {"killed": 0, "survived": 0, "timed_out": 0, "no_tests": 0, "not_checked": 0, "other": 0}
    survivors = []
    for name, code in sorted(codes.items()):
        if code in KILLED:
            counts["killed"] += 1
        elif code in TIMEOUT:
            counts["timed_out"] += 1
        elif code is None:
            counts["not_checked"] += 1
        elif code in SURVIVED or code in NO_TESTS:
            counts["survived" if code in SURVIVED else "no_tests"] += 1
            survivors.append(name)
        else:
            counts["other"] += 1  # segfault / suspicious: reported, not counted as killed
    total = len(codes)
    detected = counts["killed"] + counts["timed_out"]
    equivalent, gaps = [], []
    diffs = mutant_diffs(work, module, survivors)
    for name in survivors:
        diff = diffs[name]
        entry = {"mutant": name, "original": source_line(diff), "mutated": added_line(diff)}
        judged = EQUIVALENT.get(name)
        rule = next((reason for test, reason in EQUIVALENT_RULES if test(entry["original"], entry["mutated"])), None)
        if judged and judged[0] == entry["mutated"]:
            equivalent.append({**entry, "reason": judged[1]})
        elif rule and codes[name] in SURVIVED:
            equivalent.append({**entry, "reason": rule})
        else:
            if codes[name] in NO_TESTS:
                entry["why"] = "no test in the subset calls this function"
            known = NOT_TESTED.get(name)
            if known and known[0] == entry["mutated"]:
                entry["why"] = known[1]
            gaps.append(entry)
    countable = total - len(equivalent) - counts["not_checked"]
    score = detected / (total - counts["not_checked"]) if total - counts["not_checked"] else 0.0
    score_eq = detected / countable if countable else 0.0
    result: dict[str, object] = {
        "mutants": total,
        **counts,
        "score": round(score, 4),
        "equivalent": len(equivalent),
        "score_without_equivalent": round(score_eq, 4),
        "goal": module.goal,
        "goal_met": score_eq >= module.goal,
        "equivalent_mutants": equivalent,
        "surviving_gaps": gaps,
    }
    if module.note:
        result["scope"] = module.note
    fns = selected_functions(module)
    if fns is not None:
        result["functions"] = sorted(fns)
    return result


# -- running ---------------------------------------------------------------------------------
def check_imports_mutated(work: Path, group: Group) -> None:
    """What the tests import is mutmut's mutated copy, not the working tree (the editable
    install's finder comes after sys.path, so mutants/ wins; subprocesses started by tests
    import from their working directory, which is mutants/ too)."""
    for m in group.modules:
        mod = module_name(m.path)
        out = subprocess.run(
            [str(PYTHON), "-c", f"import {mod} as m; print(m.__file__)"],
            cwd=work / "mutants",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        path = Path(out)
        if not path.is_relative_to(work / "mutants") or "mutmut generated" not in path.read_text():
            sys.exit(f"{mod} is imported from {path}, not from the mutated copy: the results would mean nothing")


def run_group(group: Group, args: argparse.Namespace) -> dict[str, object]:
    work = prepare(group, args.keep)
    log_path = WORK / f"{group.name}.log"
    children = args.max_children or group.children
    cmd = [str(MUTMUT), "run", "--max-children", str(children), *mutant_globs(group)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    started = time.monotonic()
    print(f"[{group.name}] {' '.join(m.path for m in group.modules)} against {' '.join(group.test_files())}")
    print(f"[{group.name}] log: {log_path.relative_to(ROOT)}", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        sys.exit(f"[{group.name}] mutmut failed (exit {proc.returncode}); end of {log_path}:\n{tail}")
    return report_group(group, round(wall, 1))


def report_group(group: Group, wall_s: float | None) -> dict[str, object]:
    """The group's results, read from its working folder."""
    work = WORK / group.name
    check_imports_mutated(work, group)
    modules = {m.path: summarize(work, m) for m in group.modules}
    for path, r in modules.items():
        print(
            f"[{group.name}] {path}: {r['killed']} killed, {r['timed_out']} timed out, {r['survived']} survived, "
            f"{r['no_tests']} without tests, {r['equivalent']} equivalent; score {r['score']:.1%} "
            f"({r['score_without_equivalent']:.1%} without equivalent; goal {r['goal']:.0%})",
            flush=True,
        )
    return {"tests": group.test_files(), "deselected": group.deselected(), "wall_s": wall_s, "modules": modules}


def lanes_for(groups: list[Group], lanes: int) -> list[list[Group]]:
    """Spread the groups over `lanes` sequences of about equal length (by their estimates), the
    longest first. Groups in different lanes run at the same time: most tests wait, so two
    mutmut runs overlap their waits on the 2 cores."""
    out: list[list[Group]] = [[] for _ in range(max(1, min(lanes, len(groups))))]
    load = [0.0] * len(out)
    for group in sorted(groups, key=lambda g: -g.estimate_s):
        i = load.index(min(load))
        out[i].append(group)
        load[i] += group.estimate_s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", help=f"run only these ({', '.join(g.name for g in GROUPS)})")
    parser.add_argument("--keep", action="store_true", help="reuse the working folders and their cached results")
    parser.add_argument(
        "--report", action="store_true", help="run nothing: rebuild the report from the working folders"
    )
    parser.add_argument("--max-children", type=int, help="parallel mutant runs (default: per group)")
    parser.add_argument("--lanes", type=int, default=2, help="groups run at the same time (default 2)")
    args = parser.parse_args()
    unknown = set(args.groups) - {g.name for g in GROUPS}
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    chosen = [g for g in GROUPS if not args.groups or g.name in args.groups]

    started = time.monotonic()
    if args.report:
        for group in chosen:
            if (WORK / group.name / "mutants").is_dir():
                old = json.loads(RESULTS.read_text()).get("groups", {}).get(group.name, {}) if RESULTS.exists() else {}
                write({group.name: report_group(group, old.get("wall_s"))})
    else:
        failures: list[BaseException] = []

        def lane(groups: list[Group]) -> None:
            try:
                for group in groups:
                    write({group.name: run_group(group, args)})
            except BaseException as err:  # SystemExit from a failed run: stop and say so below
                failures.append(err)

        threads = [threading.Thread(target=lane, args=(gs,)) for gs in lanes_for(chosen, args.lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            sys.exit(str(failures[0]))
    wall = time.monotonic() - started
    if len(chosen) == len(GROUPS) and not args.report:
        write({}, full_run_wall_s=round(wall, 1))
    print(f"wrote {RESULTS.relative_to(ROOT)} ({wall / 60:.1f} min)")


_write_lock = threading.Lock()


def summary(groups: dict[str, object]) -> dict[str, object]:
    """One line per module: what was measured and whether it meets its goal."""
    out: dict[str, object] = {}
    for group in GROUPS:
        modules = groups.get(group.name, {}).get("modules", {})  # type: ignore[union-attr]
        for path, r in modules.items():
            out[path] = {
                k: r[k]
                for k in ("mutants", "killed", "timed_out", "survived", "no_tests", "equivalent", "score")
                if k in r
            } | {
                "score_without_equivalent": r["score_without_equivalent"],
                "goal": r["goal"],
                "goal_met": r["goal_met"],
                "gaps": len(r["surviving_gaps"]),
            }
    return out


def write(groups: dict[str, object], **extra: object) -> None:
    """Merge into the report on disk (other groups keep their last results)."""
    with _write_lock:
        report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        merged = {**report.get("groups", {}), **groups}
        report.update(
            {
                "tool": f"mutmut {mutmut_version()}",
                "command": "make mutate",
                "config": tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"],
                "score": "(killed + timed out) / mutants; score_without_equivalent leaves the equivalent ones out",
                **extra,
                "summary": summary(merged),
                "groups": {g.name: merged[g.name] for g in GROUPS if g.name in merged},
            }
        )
        RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    main()
