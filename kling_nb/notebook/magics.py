"""`%%kling` and `%kling`: the thin layer that knows every stage.

    cell --spec.parse_batch--> requests --runtime.run--> generations --display.CellOutput--> output

Options are traitlets, so `%config KlingMagics.output_dir = "renders"` and ipython_config.py
work. A KlingError reaches the user as one short line (a custom exception handler), and the
cell still counts as failed, so "Run All" stops at a mistake like at any other error.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
import uuid

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Float, Int, List, Unicode, observe

from . import render

from ..cell import spec
from ..contract import MODEL, billing_class
from .display import CellOutput
from ..errors import KlingError, SpecError
from ..engine.session import Runtime
from ..engine.schedule import PollSchedule
from ..engine.tracker import Generations

LINE_COMMANDS = """\
%kling wait            block until every generation of this session is done (Ctrl-C stops waiting)
%kling list            this session's generations
%kling history [N]     the project's journal, newest first (N rows, default 20)
%kling show ID         show one journal entry (its video, or why not)
%kling compare A B ..  put named generations (cells or journal) side by side in one grid
%kling resume          re-attach every in-flight task of the project after a restart
%kling login           read an API key with getpass (kept in memory only)
%kling status          where requests go (simulator or service) and the output folder"""


@magics_class
class KlingMagics(Magics):
    output_dir = Unicode(
        "kling_outputs", help="Folder for videos and the journal, relative to the notebook's folder."
    ).tag(config=True)
    base_url = Unicode("", help="Service base URL; default $TOAPIS_BASE_URL or https://toapis.com.").tag(
        config=True
    )
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

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self._runtime: Runtime | None = None

    @observe("output_dir", "base_url", "poll_first_s", "poll_interval_s", "poll_min_s", "deadline_s", "workers")
    def _settings_changed(self, change):
        # New settings apply to new generations; running ones finish in the old runtime.
        self._runtime = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            from ..sim import SimConfig

            self._runtime = Runtime(
                output_dir=self.output_dir,
                base_url=self.base_url or None,
                schedule=PollSchedule(self.poll_first_s, self.poll_interval_s, self.poll_min_s),
                deadline_s=self.deadline_s,
                workers=self.workers,
                sim_config=SimConfig(queue_s=min(1.0, self.sim_run_s / 4), run_s=self.sim_run_s),
            )
        return self._runtime

    # -- %%kling -----------------------------------------------------------------------
    @cell_magic("kling")
    def kling(self, line: str, cell: str):
        """(the help text is CELL_HELP, below)"""
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
                print(render.dry_run_text(request, runtime.base_url))
            return None
        count = len(batch.requests)
        if count > 1:
            print(_batch_summary(batch.requests))
            if count > self.confirm_above and not opts.yes:
                raise SpecError(
                    f"this cell would start {count} billed generations (more than {self.confirm_above}); "
                    "add --yes to the magic line to confirm",
                    field="sweep",
                )
        run_id = uuid.uuid4().hex
        gens = Generations(runtime.run(r, name=opts.name, force=opts.force, run_id=run_id) for r in batch.requests)
        output = CellOutput(gens, grid=count > 1, title=opts.name or "")
        runtime.outputs.append(output)
        output.show()
        if opts.name:
            self.shell.user_ns[opts.name] = gens if count > 1 else gens[0]
        if opts.wait:
            gens.wait()
            output.finalize_here()
        return None

    # -- %kling ------------------------------------------------------------------------
    @line_magic("kling")
    def kling_line(self, line: str):
        words = shlex.split(line)
        command, args = (words[0], words[1:]) if words else ("help", [])
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise SpecError(f"unknown command {command!r}. Commands:\n{LINE_COMMANDS}")
        return handler(args)

    def _cmd_help(self, args):
        print(LINE_COMMANDS)

    def _cmd_wait(self, args):
        runtime = self.runtime
        runtime.wait_all()
        for output in runtime.outputs:
            output.finalize_here()
        failed = [g for g in runtime.generations if g.error]
        done = len(runtime.generations) - len(failed)
        print(f"{done} generation(s) done" + (f", {len(failed)} with errors" if failed else ""))

    def _cmd_list(self, args):
        gens = self.runtime.generations
        if not gens:
            print("(no generations in this session)")
        for g in gens:
            print(render.status_line(render.Snapshot.of(g)))

    def _cmd_status(self, args):
        rt = self.runtime
        where = "the embedded simulator (no key set)" if rt.simulated else rt.base_url
        print(f"requests go to {where}; videos and journal in {rt.output_dir}")

    def _cmd_login(self, args):
        key = getpass.getpass("TOAPIS API key (not echoed, kept in memory only): ").strip()
        if not key:
            raise SpecError("no key entered; nothing changed")
        self.runtime.set_key(key)
        print("key set for this session: new generations go to the real service (billed)")

    def _cmd_resume(self, args):
        gens = self.runtime.resume()
        if not gens:
            print("nothing in flight: every journal entry is final")
            return
        print(f"re-attached to {len(gens)} task(s); nothing new was sent")
        output = CellOutput(Generations(gens), grid=len(gens) > 1, title="resumed")
        self.runtime.outputs.append(output)
        output.show()

    def _cmd_history(self, args):
        from IPython.display import display

        limit = int(args[0]) if args and args[0].isdigit() else 20
        records = self.runtime.journal.history(limit)

        class _Table:
            def _repr_mimebundle_(self, include=None, exclude=None):
                return {"text/plain": render.journal_table_text(records), "text/html": render.journal_table_html(records)}

        display(_Table())

    def _cmd_show(self, args):
        if not args or not args[0].isdigit():
            raise SpecError("usage: %kling show ID (the # column of %kling history)")
        runtime = self.runtime
        try:
            record = runtime.journal.get(int(args[0]))
        except KeyError:
            raise SpecError(f"no journal entry #{args[0]}; see %kling history") from None
        output = CellOutput([runtime.from_record(record)])
        runtime.outputs.append(output)
        output.show()

    def _cmd_compare(self, args):
        if not args:
            raise SpecError("usage: %kling compare NAME1 NAME2 ...")
        show_compare(self.runtime, args)


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
KlingMagics.kling.__doc__ = CELL_HELP
KlingMagics.kling_line.__doc__ = "Session commands for kling_nb:\n" + LINE_COMMANDS


def show_compare(runtime: Runtime, names: list[str]) -> Generations:
    """Named generations (this session or the journal) side by side in one grid, each tile
    labelled with its name and, for a sweep, what set it apart."""
    gens, labels = Generations(), []
    for name in names:
        found = runtime.by_name(name)
        if not found:
            raise SpecError(f"no generation named {name!r} in this session or the journal", field="compare")
        gens.extend(found)
        labels.extend({"name": name, **g.label} for g in found)
    output = CellOutput(gens, grid=True, title="compare: " + " · ".join(names), labels=labels)
    runtime.outputs.append(output)
    output.show()
    return gens


def _batch_summary(requests) -> str:
    classes: dict[str, int] = {}
    for r in requests:
        cls = billing_class(r.body)
        classes[cls] = classes.get(cls, 0) + 1
    parts = ", ".join(f"{n} x {cls}" for cls, n in classes.items())
    return f"{len(requests)} generations: {parts}"


def _unique(items):
    seen = []
    for x in items:
        if x not in seen:
            seen.append(x)
    return seen


def short_error_handler(shell, etype, evalue, tb, tb_offset=None):
    """Show a KlingError as one line, no traceback; the cell still counts as an error."""
    message = evalue.message if isinstance(evalue, KlingError) else str(evalue)
    stb = [f"{etype.__name__}: {message}"]
    shell._showtraceback(etype, evalue, stb)
    return stb
