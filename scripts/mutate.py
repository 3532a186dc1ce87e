"""Mutation testing of the modules that hold money and secrets (`make mutate`; not part of CI).

Each run group mutates its module(s) with mutmut and runs, for every mutant, only the tests of
its own subset that call the mutated function (mutmut records which tests call which function
in a first, clean pass). Groups run one after another, each in its own working folder
`mutants/<group>/` (mutmut's own copy of the sources is `mutants/<group>/mutants/`), so their
test selections and caches never mix. Results go to benchmarks/mutation.json.

    python scripts/mutate.py                 # every group, from scratch
    python scripts/mutate.py journal fields  # only these groups (the others keep their last results)
    python scripts/mutate.py --keep client   # reuse mutants/client/ (only mutants without a result run)

Surviving mutants judged equivalent (no input can tell them from the original) are listed in
EQUIVALENT below, each with the line the mutant puts in the code (checked, so a judgment goes
stale when the code under it changes) and a one-line reason. Every other survivor is a gap
in the tests and is listed as such.

Kernel and browser tests are never run here: they take minutes each.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
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

    def test_files(self) -> list[str]:
        """The subset, plus the mutation-driven tests written for its modules."""
        extra = []
        for m in self.modules:
            stem = Path(m.path).stem
            extra += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob(f"test_mutants_{stem}*.py"))]
        return self.tests + [t for t in extra if t not in self.tests]


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
    ),
    Group(
        "journal",
        [Module("kling_nb/engine/journal.py", 0.90)],
        ["tests/test_journal.py", "tests/test_trust_folder.py", "tests/test_lifecycle.py"],
    ),
    Group(
        "fields",
        [Module("kling_nb/cell/fields.py", 0.85)],
        ["tests/test_spec.py", "tests/test_sweep.py"],
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
        # starts a real kernel (nbclient): minutes per mutant
        deselect=[
            "tests/test_storyboard.py::test_a_shots_cell_in_a_real_kernel_returns_at_once_and_ends_with_the_film"
        ],
    ),
    Group(
        "schedule",
        [Module("kling_nb/engine/schedule.py", 0.85)],
        ["tests/test_schedule.py", "tests/test_lifecycle.py"],
    ),
]

# Surviving mutants judged equivalent: mutant name -> (the mutated line, as mutmut shows it
# after "+", stripped; one-line reason). Filled in by reading every survivor.
EQUIVALENT: dict[str, tuple[str, str]] = {}


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
    for node in group.deselect:
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


def mutant_diff(work: Path, name: str) -> str:
    out = subprocess.run(
        [str(VENV_BIN / "mutmut"), "show", name], cwd=work, capture_output=True, text=True, check=False
    ).stdout
    lines = out.splitlines()
    # drop the header line and the ---/+++ file lines; keep the hunk
    return "\n".join(line for line in lines[1:] if not line.startswith(("---", "+++")))


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
    for name in survivors:
        diff = mutant_diff(work, name)
        entry = {"mutant": name, "original": source_line(diff), "mutated": added_line(diff)}
        judged = EQUIVALENT.get(name)
        if judged and judged[0] == entry["mutated"]:
            equivalent.append({**entry, "reason": judged[1]})
        else:
            if codes[name] in NO_TESTS:
                entry["why"] = "no test in the subset calls this function"
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
            [sys.executable, "-c", f"import {mod} as m; print(m.__file__)"],
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
    cmd = [str(VENV_BIN / "mutmut"), "run", "--max-children", str(args.max_children), *mutant_globs(group)]
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
    check_imports_mutated(work, group)
    modules = {m.path: summarize(work, m) for m in group.modules}
    for path, r in modules.items():
        print(
            f"[{group.name}] {path}: {r['killed']} killed, {r['timed_out']} timed out, {r['survived']} survived, "
            f"{r['no_tests']} without tests, {r['equivalent']} equivalent; score {r['score']:.1%} "
            f"({r['score_without_equivalent']:.1%} without equivalent; goal {r['goal']:.0%})",
            flush=True,
        )
    return {
        "tests": group.test_files(),
        "deselected": group.deselect,
        "wall_s": round(wall, 1),
        "modules": modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", help=f"run only these ({', '.join(g.name for g in GROUPS)})")
    parser.add_argument("--keep", action="store_true", help="reuse the working folders and their cached results")
    # The tests mostly wait (on HTTP, threads, timers), so more children than cores pays off.
    parser.add_argument("--max-children", type=int, default=4)
    args = parser.parse_args()
    unknown = set(args.groups) - {g.name for g in GROUPS}
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    chosen = [g for g in GROUPS if not args.groups or g.name in args.groups]

    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report: dict[str, object] = {
        "tool": f"mutmut {mutmut_version()}",
        "command": "make mutate",
        "config": tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"],
        "score": "(killed + timed out) / mutants; score_without_equivalent leaves the equivalent ones out",
        "groups": dict(previous.get("groups", {})),
    }
    started = time.monotonic()
    for group in chosen:
        report["groups"][group.name] = run_group(group, args)  # type: ignore[index]
        report["groups"] = {g.name: report["groups"][g.name] for g in GROUPS if g.name in report["groups"]}  # type: ignore[index]
        write(report)
    wall = time.monotonic() - started
    if len(chosen) == len(GROUPS):
        report["full_run_wall_s"] = round(wall, 1)
    elif "full_run_wall_s" in previous:
        report["full_run_wall_s"] = previous["full_run_wall_s"]
    write(report)
    print(f"wrote {RESULTS.relative_to(ROOT)} ({wall / 60:.1f} min)")


def write(report: dict[str, object]) -> None:
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    main()
