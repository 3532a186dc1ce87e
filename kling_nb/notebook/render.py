"""Pure builders: a generation's state in, strings out (HTML and plain text). No I/O, no
widgets, no IPython. Every piece of user or server text is escaped here, once.

The saved output of a cell is built here: a plain text/html `<video>` whose src is relative
to the notebook, so it plays in JupyterLab, after reopening without a kernel and in
nbconvert HTML (docs/design-notes.md section 2), with a link and a text fallback.
"""

from __future__ import annotations

import html
import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from ..contract import billing_class
from ..engine.generation import Snapshot

SIMULATED_NOTE = (
    "Simulated: no TOAPIS_API_KEY is set, so kling_nb's built-in simulator made this video. "
    "Set TOAPIS_API_KEY (or run %kling login) to use the real service."
)

BADGE_COLOURS = {
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "in_progress": "#0969da",
    "downloading": "#0969da",
    "unknown": "#9a6700",
}


def video_src(s: Snapshot) -> str | None:
    """The video's URL path relative to the notebook (the kernel's working directory)."""
    return relative_src(s.video_path) if s.video_path else None


def error_text(s: Snapshot) -> str | None:
    return s.error.message if s.error is not None else None


def relative_src(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> str:
    """A URL path to `path` relative to the notebook's folder, each segment percent-encoded."""
    rel = os.path.relpath(Path(path).resolve(), Path(base_dir or os.getcwd()).resolve())
    return "/".join(quote(part) for part in Path(rel).parts)


def params_text(body: dict) -> str:
    """'720P 5s · 16:9' plus the reference lists in use: the parameters a person checks."""
    parts = [billing_class(body), str(body.get("aspect_ratio", "16:9"))]
    meta = body.get("metadata") or {}
    for key, noun in (("image_list", "image"), ("element_list", "element")):
        if meta.get(key):
            parts.append(f"{len(meta[key])} {noun}{'s' * (len(meta[key]) > 1)}")
    if body.get("video_list"):
        n = len(body["video_list"])
        parts.append(f"{n} video{'s' * (n > 1)}")
    return " · ".join(parts)


def label_text(label: dict) -> str:
    return " · ".join(f"{k}={v}" for k, v in label.items())


def elapsed_text(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


ORIGIN_TEXT = {
    "new": "",
    "reused": "saved result from the journal, nothing sent",
    "reattached": "re-attached to the running task, nothing new sent",
    "restarted": "its simulator had stopped with an earlier kernel: simulated again (free)",
}


def status_line(s: Snapshot) -> str:
    """One line of plain text: the text/plain fallback and the terminal's progress line."""
    who = s.name or "kling"
    if error_text(s) and s.status in ("failed", "unknown"):
        line = f"✗ {who}: {s.status}: {error_text(s)}"
    elif error_text(s):
        line = f"! {who}: {s.status}: {error_text(s)}"
    elif s.status == "completed":
        line = f"✓ {who}: completed in {elapsed_text(s.elapsed_s)}, video: {video_src(s)}"
    else:
        line = f"… {who}: {s.status} {s.progress}% ({elapsed_text(s.elapsed_s)})"
    extra = ORIGIN_TEXT.get(s.origin, "")
    if extra:
        line += f" [{extra}]"
    if s.task_id:
        line += f" task {s.task_id}"
    if s.simulated:
        line += " [simulated]"
    return line


def badge_html(status: str) -> str:
    colour = BADGE_COLOURS.get(status, "#6e7781")
    return (
        f'<span class="kling-badge" style="background:{colour};color:#fff;border-radius:10px;'
        f'padding:1px 8px;font-size:12px">{html.escape(status.replace("_", " "))}</span>'
    )


def header_html(s: Snapshot) -> str:
    """Name, prompt and parameters: the part of the live view that does not change."""
    name = f"<b>{html.escape(s.name)}</b> · " if s.name else ""
    lab = f"<i>{html.escape(label_text(s.label))}</i> · " if s.label else ""
    sim = (
        f'<div class="kling-sim" style="color:#9a6700;font-size:12px">{html.escape(SIMULATED_NOTE)}</div>'
        if s.simulated
        else ""
    )
    return (
        f'<div class="kling-header">{name}{lab}<span style="color:#57606a">{html.escape(params_text(s.body))}</span>'
        f'<div class="kling-prompt" style="white-space:pre-wrap">{html.escape(s.prompt)}</div>{sim}</div>'
    )


def live_card_html(s: Snapshot, *, compact: bool = False) -> str:
    """The live widget's card: header, status badge, progress bar, elapsed time, task id, and
    the service's code and message on failure. `compact` (grid tiles) shows the label only."""
    if compact:
        head = f"<b>{html.escape(label_text(s.label) or s.name or _excerpt(s.prompt, 40))}</b>"
    else:
        head = header_html(s)
    task = f" · task {html.escape(s.task_id)}" if s.task_id else ""
    origin = ORIGIN_TEXT.get(s.origin, "")
    error = (
        f'<div class="kling-error" style="color:#cf222e">{html.escape(error_text(s))}</div>' if error_text(s) else ""
    )
    return (
        f'<div class="kling-card" data-status="{html.escape(s.status, quote=True)}">{head}'
        f'<div style="display:flex;gap:8px;align-items:center;font-size:12px">{badge_html(s.status)}'
        f'<progress class="kling-progress" max="100" value="{s.progress}" style="width:{120 if compact else 220}px">'
        f"{s.progress}%</progress><span>{s.progress}%</span>"
        f'<span class="kling-elapsed">{elapsed_text(s.elapsed_s)}</span>'
        f'<span style="color:#57606a">{task}</span></div>'
        f'{f"<div style=font-size:12px;color:#57606a>{html.escape(origin)}</div>" if origin else ""}{error}</div>'
    )


def grid_columns(count: int) -> int:
    """2 x 2 for four tiles, otherwise up to three across."""
    return 2 if count == 4 else max(1, min(count, 3))


def video_html(s: Snapshot, *, width: int = 480, caption: bool = True) -> str:
    """The final saved output of a finished generation: a relative <video>, a caption, a link."""
    src = html.escape(video_src(s) or "", quote=True)
    text = " · ".join(
        x
        for x in (
            f"<b>{html.escape(s.name)}</b>" if s.name else "",
            html.escape(_excerpt(s.prompt)),
            html.escape(params_text(s.body)),
            f'<a href="{src}" download>{html.escape(video_src(s) or "")}</a>',
            f"task {html.escape(s.task_id)}" if s.task_id else "",
            html.escape(ORIGIN_TEXT.get(s.origin, "")),
            "simulated" if s.simulated else "",
        )
        if x
    )
    return (
        f'<div class="kling-result">'
        f'<video src="{src}" controls loop muted playsinline preload="metadata" '
        f'style="max-width:100%;width:{width}px;display:block">'
        f'Your viewer does not play video here: <a href="{src}">{src}</a></video>'
        f'{f"""<div class="kling-caption" style="font-size:12px;color:#57606a">{text}</div>""" if caption else ""}'
        f"</div>"
    )


def failure_html(s: Snapshot) -> str:
    """The final output of a generation that failed or could not be saved: the service's
    code and message as text, never as markup."""
    title = html.escape(s.name or "kling")
    return (
        f'<div class="kling-error" style="border-left:3px solid #cf222e;padding:4px 8px">'
        f"<b>{title}</b>: {badge_html(s.status)} {html.escape(error_text(s) or '')}"
        f'<div style="font-size:12px;color:#57606a">{html.escape(_excerpt(s.prompt))} · '
        f"{html.escape(params_text(s.body))}{' · task ' + html.escape(s.task_id) if s.task_id else ''}</div></div>"
    )


def generation_html(s: Snapshot) -> str:
    """Whatever is most useful now: the video, the error, or a status card."""
    if video_src(s) and s.status == "completed":
        return video_html(s)
    if error_text(s):
        return failure_html(s)
    return (
        f'<div class="kling-pending">{header_html(s)}{badge_html(s.status)} {s.progress}% · '
        f"{elapsed_text(s.elapsed_s)}{' · task ' + html.escape(s.task_id) if s.task_id else ''}</div>"
    )


def final_bundle(s: Snapshot) -> dict[str, str]:
    """The mime bundle a cell is left with: text/html plus its text/plain fallback."""
    return {"text/html": generation_html(s), "text/plain": status_line(s)}


def grid_html(snaps: list[Snapshot], *, columns: int | None = None, title: str = "") -> str:
    """A labelled grid of videos with play/pause/seek/loop controls that drive every tile
    together. The controls need scripts, so they start hidden and the script reveals them:
    a reopened, untrusted notebook shows a plain static grid instead of dead buttons."""
    cols = columns or grid_columns(len(snaps))
    grid_id = f"kling-grid-{uuid.uuid4().hex[:12]}"
    tiles = []
    for s in snaps:
        label = html.escape(label_text(s.label) or s.name or _excerpt(s.prompt, 40))
        if video_src(s) and s.status == "completed":
            src = html.escape(video_src(s), quote=True)
            body = (
                f'<video src="{src}" muted loop playsinline preload="auto" controls '
                f'style="width:100%;display:block">Video: <a href="{src}">{src}</a></video>'
            )
        elif error_text(s):
            body = (
                f'<div class="kling-error" style="padding:8px;border:1px solid #cf222e">'
                f"✗ {html.escape(error_text(s))}</div>"
            )
        else:
            body = f'<div style="padding:8px;border:1px dashed #8c959f">{html.escape(s.status)} {s.progress}%</div>'
        tiles.append(
            f'<figure class="kling-tile" style="margin:0">{body}'
            f'<figcaption style="font-size:12px;text-align:center">{label}</figcaption></figure>'
        )
    heading = f'<div style="font-weight:bold">{html.escape(title)}</div>' if title else ""
    sim = any(s.simulated for s in snaps)
    note = f'<div style="color:#9a6700;font-size:12px">{html.escape(SIMULATED_NOTE)}</div>' if sim else ""
    return (
        f'<div class="kling-grid" id="{grid_id}">{heading}'
        f'<div class="kling-grid-controls" hidden style="margin:4px 0">'
        f'<button data-act="play">▶ Play all</button> <button data-act="pause">❚❚ Pause all</button> '
        f'<input data-act="seek" type="range" min="0" max="1000" value="0" style="width:200px"> '
        f'<label><input data-act="loop" type="checkbox" checked> loop</label></div>'
        f'<div style="display:grid;grid-template-columns:repeat({cols},minmax(0,1fr));gap:8px">'
        f"{''.join(tiles)}</div>{note}"
        f"<script>{_LOCKSTEP_JS % json.dumps(grid_id)}</script></div>"
    )


# Plays every video of one grid together. The first video leads; followers that drift more
# than 0.1 s from it are pulled back, so motion can be compared frame by frame.
_LOCKSTEP_JS = """(function(){
var root=document.getElementById(%s); if(!root) return;
var vids=Array.prototype.slice.call(root.querySelectorAll('video'));
var bar=root.querySelector('.kling-grid-controls'); if(!vids.length||!bar) return;
bar.hidden=false; var lead=vids[0];
function each(f){vids.forEach(f);}
function sync(){each(function(v){if(v!==lead&&Math.abs(v.currentTime-lead.currentTime)>0.1){v.currentTime=lead.currentTime;}});}
bar.querySelector('[data-act=play]').onclick=function(){sync();each(function(v){v.muted=true;v.play();});};
bar.querySelector('[data-act=pause]').onclick=function(){each(function(v){v.pause();});sync();};
var seek=bar.querySelector('[data-act=seek]');
seek.oninput=function(){each(function(v){if(v.duration){v.currentTime=v.duration*seek.value/1000;}});};
bar.querySelector('[data-act=loop]').onchange=function(e){each(function(v){v.loop=e.target.checked;});};
lead.addEventListener('timeupdate',function(){if(lead.duration){seek.value=Math.round(1000*lead.currentTime/lead.duration);}if(!lead.paused){sync();}});
root.kling={videos:vids,play:bar.querySelector('[data-act=play]').onclick,pause:bar.querySelector('[data-act=pause]').onclick};
})();"""


def grid_text(snaps: list[Snapshot]) -> str:
    return "\n".join(status_line(s) for s in snaps)


def grid_bundle(snaps: list[Snapshot], *, title: str = "") -> dict[str, str]:
    return {"text/html": grid_html(snaps, title=title), "text/plain": grid_text(snaps)}


def dry_run_text(request, base_url: str, *, simulated: bool = False) -> str:
    """What a person checks before paying: the exact body, the curl command, the bill."""
    uploads = ""
    if request.uploads:
        lines = [f"  {'.'.join(map(str, u.where))}: {u.path} ({u.mime}, {u.size} bytes)" for u in request.uploads]
        uploads = "Local files uploaded first (their URLs replace the paths):\n" + "\n".join(lines) + "\n"
    warnings = "".join(f"warning: {w}\n" for w in request.warnings)
    return (
        f"Dry run: nothing was sent.\nBilled as: {request.billing_class}\n{warnings}{uploads}"
        f"Body:\n{json.dumps(request.body, indent=2, ensure_ascii=False)}\n"
        f"Equivalent request (key redacted):\n{request.curl(base_url)}"
        + ("\nNo key is set: a real run of this cell would go to kling_nb's embedded simulator (free)."
           if simulated else "")
    )


def journal_table_html(records: list, *, now: float | None = None) -> str:
    """`%kling history`: newest first."""
    now = now or time.time()
    rows = []
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(x))}</td>"
                for x in (
                    r.id,
                    r.name or "",
                    _excerpt(r.body.get("prompt", ""), 50),
                    params_text(r.body),
                    r.status,
                    when,
                    r.video_path or "",
                )
            )
            + "</tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("#", "name", "prompt", "parameters", "status", "when", "file"))
    return f'<table class="kling-history"><tr>{head}</tr>{"".join(rows)}</table>'


def journal_table_text(records: list) -> str:
    lines = []
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
        lines.append(
            f"#{r.id} {r.name or '-'} {r.status} {when} {params_text(r.body)} "
            f"{_excerpt(r.body.get('prompt', ''), 50)!r} {r.video_path or ''}"
        )
    return "\n".join(lines) or "(no generations yet)"


def _excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
