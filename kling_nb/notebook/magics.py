"""`%%kling` and `%kling`: the thin layer that knows every stage.

    cell --cell.spec.parse_batch--> requests --engine.Runtime.run--> generations --display.CellOutput--> output

Options are traitlets, so `%config KlingMagics.output_dir = "renders"` and ipython_config.py
work; a change applies to generations started afterwards, while running ones go on in the
kernel's one runtime. The `%%kling` options and the `%kling` commands are each declared once
(argparse); their help text is made from that declaration. A KlingError reaches the user as
one short line (KlingError._render_traceback_), and the cell still counts as failed, so
"Run All" stops at a mistake like at any other error.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Bool, Enum, Float, Int, List, Unicode, observe

from ..cell import spec
from ..contract import MODEL, billing_class
from ..engine.generation import Generations
from ..engine.schedule import PollSchedule
from ..engine.session import Runtime
from ..errors import KlingError, SpecError
from ..service.client import Client
from . import render
from .display import CellOutput
from .frontends import EMBED_MODES, Embedding, colab_key, frontend

# The one declaration of the `%kling` commands: (name, positional arguments, help). The
# parser and the `%kling?` text are both made from it.
_COMMANDS: list[tuple[str, list[tuple[str, dict]], str]] = [
    ("wait", [], "block until every generation of this session is done (Ctrl-C stops waiting)"),
    ("list", [], "this session's generations"),
    (
        "history",
        [("rows", dict(type=int, nargs="?", default=20, metavar="[N]"))],
        "the project's journal, newest first (N rows, default 20)",
    ),
    ("show", [("entry", dict(metavar="ID|NAME"))], "one journal entry or named generation (its video, or why not)"),
    (
        "compare",
        [("names", dict(nargs="+", metavar="A B .."))],
        "put named generations (cells or journal) side by side in one grid",
    ),
    ("resume", [], "re-attach every in-flight task of the project after a restart"),
    ("login", [], "read an API key with getpass (kept in memory only)"),
    ("status", [], "where requests go (simulator or service) and the output folder"),
    (
        "stitch",
        [("names", dict(nargs="+", metavar="A B ..")), ("--name", dict(required=True, metavar="FILM"))],
        "cut named generations, in order, into one film (made when they are done; a re-run is free)",
    ),
    ("balance", [], "the key's remaining and used credits, as the service reports them (and the account's)"),
    ("spend", [], "credits spent: this session, today, all time (measured from balance readings)"),
    (
        "classroom",
        [
            ("action", dict(choices=["keys", "usage"], metavar="keys N|usage FILE.csv")),
            ("target", dict(metavar="")),
            ("--credits", dict(type=float, metavar="C")),
            ("--expires", dict(metavar="YYYY-MM-DD")),
            ("--prefix", dict(default="student", metavar="NAME")),
            ("--out", dict(metavar="FILE.csv")),
        ],
        "limited keys for a class, made with the vendor's token API, written only to FILE.csv; or their usage",
    ),
    (
        "export",
        [("notebook", dict(metavar="NOTEBOOK.ipynb")), ("--embed", dict(action="store_true"))],
        "write NOTEBOOK.html with every result (--embed: videos inside the page, one self-contained file)",
    ),
    ("help", [], "this list"),
]


def _usage(name: str, args: list[tuple[str, dict]]) -> str:
    if name == "classroom":  # two forms under one command
        return (
            "classroom keys N --credits C [--expires YYYY-MM-DD] [--prefix NAME] --out FILE.csv\n"
            "%kling classroom usage FILE.csv"
        )
    words = [name]
    for dest, kw in args:
        if not dest.startswith("--"):
            words.append(kw["metavar"])
        elif "metavar" not in kw:
            words.append(f"[{dest}]")
        else:
            words.append(f"{dest} {kw['metavar']}" if kw.get("required") else f"[{dest} {kw['metavar']}]")
    return " ".join(w for w in words if w)


LINE_COMMANDS = "\n".join(f"%kling {_usage(name, args):<32} {help}" for name, args, help in _COMMANDS)


class _CommandParser(argparse.ArgumentParser):
    def error(self, message):
        raise SpecError(f"{message}. Commands:\n{LINE_COMMANDS}", field="%kling")


COMMANDS = _CommandParser(prog="%kling", add_help=False)
_sub = COMMANDS.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
for _name, _args, _help in _COMMANDS:
    _parser = _sub.add_parser(_name, help=_help, add_help=False)
    for _dest, _kw in _args:
        _parser.add_argument(_dest, **_kw)


@magics_class
class KlingMagics(Magics):
    output_dir = Unicode(
        "kling_outputs", help="Folder for videos and the journal, relative to the notebook's folder."
    ).tag(config=True)
    base_url = Unicode("", help="Service base URL; default $TOAPIS_BASE_URL or https://toapis.com.").tag(config=True)
    poll_first_s = Float(5.0, help="First status look after submitting (vendor: ~5 s).").tag(config=True)
    poll_interval_s = Float(10.0, help="Steady status rhythm (vendor: ~10 s).").tag(config=True)
    poll_min_s = Float(0.5, help="Tightest poll spacing, near a predicted completion.").tag(config=True)
    deadline_s = Float(
        1800.0, help="Stop waiting for a generation after this many seconds (it goes on; resume later)."
    ).tag(config=True)
    confirm_above = Int(8, help="A cell starting more generations than this needs --yes.").tag(config=True)
    allowed_models = List(Unicode(), default_value=[MODEL], help="Models a cell may name.").tag(config=True)
    workers = Int(8, help="HTTP worker threads for uploads, polls and downloads.").tag(config=True)
    sim_run_s = Float(4.0, help="How long a simulated generation runs (no key set).").tag(config=True)
    budget_credits = Float(
        0.0, help="Refuse a cell once this session's measured spend reaches this many credits (0: no budget)."
    ).tag(config=True)
    budget_includes_estimate = Bool(
        False, help="Also count a cell's estimated cost (from what its billing classes cost before) against the budget."
    ).tag(config=True)
    embed = Enum(
        list(EMBED_MODES),
        default_value="auto",
        help="Embed finished videos in the notebook: auto (in Colab and VS Code, which cannot play a file "
        "beside the notebook), always, or never.",
    ).tag(config=True)
    embed_max_mb = Float(20.0, help="Largest video embedded; above it the output keeps the still and a link.").tag(
        config=True
    )

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self._runtime: Runtime | None = None
        self._told_colab = False

    def _settings(self) -> dict:
        return dict(
            output_dir=self.output_dir,
            base_url=self.base_url or None,
            schedule=PollSchedule(self.poll_first_s, self.poll_interval_s, self.poll_min_s),
            deadline_s=self.deadline_s,
            sim_config=dict(queue_s=min(1.0, self.sim_run_s / 4), run_s=self.sim_run_s),
        )

    @observe("output_dir", "base_url", "poll_first_s", "poll_interval_s", "poll_min_s", "deadline_s", "sim_run_s")
    def _settings_changed(self, change):
        # New settings apply to new generations; running ones keep theirs and stay tracked.
        if self._runtime is not None:
            self._runtime.configure(**self._settings())

    @property
    def runtime(self) -> Runtime:
        """The kernel's one runtime (made on first use; reading it starts nothing)."""
        if self._runtime is None:
            key = None if os.environ.get("TOAPIS_API_KEY") else colab_key()  # Colab keeps keys in Secrets
            self._runtime = Runtime(workers=self.workers, api_key=key, **self._settings())
        return self._runtime

    def _output(self, gens, **how) -> CellOutput:
        output = CellOutput(gens, embedding=Embedding.here(self.embed, int(self.embed_max_mb * 1048576)), **how)
        self.runtime.outputs.append(output)
        return output

    # -- %%kling -----------------------------------------------------------------------
    # IPython types cell_magic(name) and line_magic(name) as a union, not as a decorator.
    @cell_magic("kling")  # type: ignore[arg-type]
    def kling(self, line: str, cell: str):
        """(the help text is CELL_HELP, below)"""
        assert self.shell is not None  # a Magics made by load_ipython_extension has its shell
        batch = spec.parse_batch(
            cell, line, namespace=self.shell.user_ns, allowed_models=tuple(self.allowed_models), base_dir=os.getcwd()
        )
        opts = batch.options
        for warning in _unique(list(batch.warnings) + [w for r in batch.requests for w in r.warnings]):
            print(f"warning: {warning}", file=sys.stderr)
        runtime = self.runtime
        if opts.dry_run:
            for i, request in enumerate(batch.requests, 1):
                if len(batch.requests) > 1:
                    print(f"--- variant {i}/{len(batch.requests)}: {render.label_text(request.label)}")
                print(render.dry_run_text(request, runtime.service_url, simulated=runtime.simulated))
            return None
        count = len(batch.requests)
        if count > 1:
            print(_batch_summary(batch.requests, runtime))
            if count > self.confirm_above and not opts.yes:
                raise SpecError(
                    f"this cell would start {count} billed generations (more than {self.confirm_above}); "
                    "add --yes to the magic line to confirm",
                    field="sweep",
                )
        runtime.check_references(batch.requests)
        if self.budget_credits > 0:
            sending = runtime.would_send(batch.requests)
            if sending:  # a re-run that only shows saved results costs nothing and is never refused
                runtime.meter.check_budget(
                    self.budget_credits, [r.body for r in sending], with_estimate=self.budget_includes_estimate
                )
        run_id = uuid.uuid4().hex
        gens = Generations(runtime.run(r, name=opts.name, force=opts.force, run_id=run_id) for r in batch.requests)
        output = self._output(gens, grid=count > 1, title=opts.name or "")
        output.show()
        if batch.film:  # a `shots:` cell: the shots above, the film they make below
            film = runtime.stitch([g.name for g in gens], name=batch.film, run_id=run_id)
            self._output([film]).show()
        if not opts.wait and frontend() == "colab" and not self._told_colab:
            self._told_colab = True
            print(
                "Colab does not show updates sent from background threads: the result appears when you run "
                "`%kling wait` (or add --wait to the cell)."
            )
        if opts.name:
            self.shell.user_ns[opts.name] = film if batch.film else (gens if count > 1 else gens[0])
        if opts.wait:
            gens.wait()
            if batch.film:
                film.wait()
            self._finalize_all()
        return None

    def _finalize_all(self) -> None:
        for output in list(self.runtime.outputs):
            output.finalize_here()

    # -- %kling ------------------------------------------------------------------------
    @line_magic("kling")  # type: ignore[arg-type]
    def kling_line(self, line: str):
        try:
            words = shlex.split(line)
        except ValueError as err:
            raise SpecError(f"cannot read the line: {err}", field="%kling") from None
        args = COMMANDS.parse_args(words or ["help"])
        return getattr(self, f"_cmd_{args.command}")(args)

    def _cmd_help(self, args):
        print(LINE_COMMANDS)

    def _cmd_wait(self, args):
        runtime = self.runtime
        runtime.wait_all()
        self._finalize_all()
        gens = list(runtime.generations)
        failed = [g for g in gens if g.error]
        print(f"{len(gens) - len(failed)} generation(s) done" + (f", {len(failed)} with errors" if failed else ""))

    def _cmd_list(self, args):
        gens = self.runtime.generations
        if not gens:
            print("(no generations in this session)")
        for g in gens:
            print(render.status_line(g.snapshot()))

    def _cmd_status(self, args):
        rt = self.runtime
        where = "the embedded simulator (no key set)" if rt.simulated else rt.service_url
        print(f"requests go to {where}; videos and journal in {os.path.relpath(rt.output_dir)}")

    def _cmd_login(self, args):
        key = getpass.getpass("TOAPIS API key (not echoed, kept in memory only): ")
        if not key.strip():
            raise SpecError("no key entered; nothing changed")
        self.runtime.set_key(key)
        print("key set for this session: new generations go to the real service (billed); running ones go on")

    def _cmd_resume(self, args):
        gens = self.runtime.resume()
        if not gens:
            print("nothing in flight: every journal entry is final")
            return
        waiting = sum(1 for g in gens if g.status == "waiting")
        print(
            f"re-attached to {len(gens) - waiting} task(s); nothing new was sent for them"
            + (f"; {waiting} waiting request(s) go out when what they wait for is done" if waiting else "")
        )
        self._show(Generations(gens), grid=len(gens) > 1, title="resumed")

    def _cmd_history(self, args):
        from IPython.display import display

        records = self.runtime.journal.history(max(1, args.rows))

        class _Table:
            def _repr_mimebundle_(self, include=None, exclude=None):
                return {
                    "text/plain": render.journal_table_text(records),
                    "text/html": render.journal_table_html(records),
                }

        display(_Table())

    def _cmd_show(self, args):
        runtime = self.runtime
        if args.entry.isdigit():
            try:
                gens = [runtime.from_record(runtime.journal.get(int(args.entry)))]
            except KeyError:
                raise SpecError(f"no journal entry #{args.entry}; see %kling history") from None
        else:
            gens = runtime.by_name(args.entry)
            if not gens:
                raise SpecError(f"no generation named {args.entry!r} in this session or the journal")
        self._show(Generations(gens), grid=len(gens) > 1, title=args.entry)

    def _cmd_balance(self, args):
        runtime = self.runtime
        meter = runtime.meter
        balance = meter.reading(fresh=True)
        where = "the simulator (simulated credits)" if runtime.simulated else runtime.service_url
        if balance is None:
            raise KlingError(f"the balance could not be read from {where}: {meter.error}")
        print(f"this key ({where}): {_credits(balance)}")
        try:
            account = runtime.backend.client.account_balance()
        except KlingError:
            return  # a key may not be allowed to see its account
        print(f"the whole account: {_credits(account)}")

    def _cmd_spend(self, args):
        spend = self.runtime.meter.spend()
        session = "unknown (" + spend.why + ")" if spend.session is None else f"{spend.session:g} credits"
        print(
            f"this session: {session}; today: {spend.today:g} credits; all time: {spend.all_time:g} credits"
            " (measured from the key's balance, in this journal)"
        )
        for cls, n in sorted(spend.counts.items()):
            measured = spend.per_class.get(cls)
            cost = f", about {measured:g} credits each (measured; an estimate for the next)" if measured else ""
            print(f"  {n} x {cls}{cost}")
        if self.runtime.simulated:
            print("(simulated: no key is set, these are the simulator's credits)")

    def _cmd_classroom(self, args):
        runtime = self.runtime
        if args.action == "usage":
            from ..engine.money import class_usage

            def client_for(key):
                return Client(runtime.backend.client.base_url, key, environ={})

            for usage in class_usage(Path(args.target), client_for):
                print(f"{usage.name}: {_credits(usage.balance) if usage.balance else 'error: ' + usage.error}")
            return
        from ..engine.money import class_keys

        if not args.target.isdigit() or args.credits is None or not args.out:
            raise SpecError(
                "usage: %kling classroom keys N --credits C [--expires YYYY-MM-DD] [--prefix NAME] --out FILE.csv",
                field="%kling",
            )
        try:
            expires = date.fromisoformat(args.expires) if args.expires else None
        except ValueError:
            raise SpecError(f"--expires must be a date like 2026-12-31, not {args.expires!r}") from None
        names = class_keys(
            runtime.backend.client,
            int(args.target),
            credits=args.credits,
            out=Path(args.out),
            prefix=args.prefix,
            expires=expires,
        )
        print(
            f"made {len(names)} keys ({names[0]} .. {names[-1]}), {args.credits:g} credits each, "
            f"kling-video-o1 only, expiring {args.expires or 'never'}; written only to {args.out} "
            "(owner-only). Hand each student their line."
        )

    def _cmd_stitch(self, args):
        film = self.runtime.stitch(args.names, name=args.name)
        self.shell.user_ns[args.name] = film
        self._show(Generations([film]))

    def _cmd_export(self, args):
        from .export import export, plan

        if args.embed:
            sizes = plan(Path(args.notebook))
            print(f"embedding {len(sizes)} file(s), {sum(sizes.values()) / 1048576:.1f} MiB before base64")
        print(export(args.notebook, embed=args.embed).report)

    def _cmd_compare(self, args):
        show_compare(self.runtime, args.names, embedding=Embedding.here(self.embed, int(self.embed_max_mb * 1048576)))

    def _show(self, gens: Generations, **how) -> None:
        self._output(gens, **how).show()


CELL_HELP = f"""Generate a video with kling-video-o1: %%kling [options], then an optional YAML
header, a line `---`, and the prompt. Returns at once; a live widget tracks the generation;
the finished video is saved in kling_outputs/ and shown inline.

    %%kling --name skyline --wait
    mode: pro              # std (720P) or pro (1080P)
    duration: 5            # 5 or 10 seconds
    aspect_ratio: 16:9     # 16:9, 9:16, 1:1 (others allowed, with a warning)
    audio: false           # true: generate sound (billed as "Sound"; not with videos)
    images: [media/portrait.png]   # URLs or local images (uploaded once); <<<image_N>>>
    ---
    Make the person in <<<image_1>>> wave at the camera

Other header keys: videos (URL, refer_type base|feature, keep_original_sound; <<<video_N>>>),
elements (URL or local image, role; <<<element_N>>>), metadata, video_list, model, prompt.
A JSON body from the vendor's docs is a valid header. Variants: `sweep:` maps fields to lists
(every combination); `variants:` lists partial headers. {{name}} fills in a Python variable in the
prompt or a string value; {{{{ and }}}} are literal braces.

Options:
{spec.LINE_HELP}

Line commands:
{LINE_COMMANDS}
"""
# `%%kling?` and `%kling?` print these (setattr: IPython's decorators hide the methods' type).
setattr(KlingMagics.kling, "__doc__", CELL_HELP)  # noqa: B010
setattr(KlingMagics.kling_line, "__doc__", "Session commands for kling_nb:\n" + LINE_COMMANDS)  # noqa: B010


def show_compare(runtime: Runtime, names: list[str], *, embedding: Embedding | None = None) -> Generations:
    """Named generations (this session or the journal) side by side in one grid, each tile
    labelled with its name and, for a sweep, what set it apart."""
    gens, labels = Generations(), list[dict[str, Any]]()
    for name in names:
        found = runtime.by_name(name)
        if not found:
            raise SpecError(f"no generation named {name!r} in this session or the journal", field="compare")
        gens.extend(found)
        labels.extend({"name": name, **g.label} for g in found)
    output = CellOutput(gens, grid=True, title="compare: " + " · ".join(names), labels=labels, embedding=embedding)
    runtime.outputs.append(output)
    output.show()
    return gens


def _batch_summary(requests, runtime: Runtime | None = None) -> str:
    classes: dict[str, int] = {}
    for r in requests:
        cls = billing_class(r.body)
        classes[cls] = classes.get(cls, 0) + 1
    parts = ", ".join(f"{n} x {cls}" for cls, n in classes.items())
    line = f"{len(requests)} generations: {parts}"
    if runtime is not None and not runtime.simulated:
        estimate = runtime.meter.estimate([r.body for r in requests])
        if estimate is not None:
            line += f"; estimated {estimate:g} credits (from what these classes cost before in this journal)"
    return line


def _credits(balance) -> str:
    if balance.unlimited:
        used = f"; {balance.used_credits:g} used" if balance.used_credits is not None else ""
        return "unlimited" + used
    left = "unknown" if balance.remaining_credits is None else f"{balance.remaining_credits:g}"
    used = "" if balance.used_credits is None else f", {balance.used_credits:g} used"
    return f"{left} credits left{used}"


def _unique(items):
    seen = []
    for x in items:
        if x not in seen:
            seen.append(x)
    return seen
