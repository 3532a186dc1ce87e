"""Pure builders: a generation's state in, strings out (HTML and plain text). No I/O, no
widgets, no IPython. Every piece of user or server text is escaped here, once.

The saved output of a cell is built here: a plain text/html `<video>` whose src is relative
to the notebook, so it plays in JupyterLab, after reopening without a kernel and in
nbconvert HTML (docs/design-notes.md section 2), with a link and a text fallback. Viewers
that cannot play it (GitHub, PDF, PyCharm, a strict content policy) get the poster still:
inline as the `<video>` poster and as the bundle's image/jpeg entry, and as an `<img>` of the
still's file inside the `<video>` (shown where a sanitizer strips `<video>`).

Colours come from JupyterLab's theme variables, with light fallbacks for static HTML, so
captions stay readable (WCAG AA) in the light and the dark theme.
"""

from __future__ import annotations

import html
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..contract import billing_class
from ..engine.generation import Snapshot

SIMULATED_NOTE = (
    "Simulated: no TOAPIS_API_KEY is set, so kling_nb's built-in simulator made this video. "
    "Set TOAPIS_API_KEY (or run %kling login) to use the real service."
)

# Theme-aware colours: JupyterLab's CSS variables, with fallbacks for static HTML.
TEXT = "var(--jp-ui-font-color1, #1f2328)"
MUTED = "var(--jp-ui-font-color2, #57606a)"
WARN = "var(--jp-warn-color0, #9a6700)"
ERROR = "var(--jp-error-color1, #cf222e)"
BORDER = "var(--jp-border-color1, #8c959f)"
# The warning colour marks the note's edge; its text keeps the body colour (the warning
# colour itself is under 4.5:1 on a light background).
NOTE_STYLE = f"color:{TEXT};font-size:12px;border-left:3px solid {WARN};padding-left:6px"

BADGE_COLOURS = {
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "in_progress": "#0969da",
    "downloading": "#0969da",
    "unknown": "#9a6700",
}


@dataclass(frozen=True)
class Media:
    """How a finished video is referenced in an output (chosen by the notebook's frontend)."""

    src: str  # relative to the notebook, or a data: URI when embedded
    still: str | None = None  # the poster still as base64 JPEG, carried inside the output
    still_src: str | None = None  # the still's file, relative to the notebook
    note: str = ""  # why the video is not embedded where it should have been


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
        f'<span class="kling-badge" style="background:{colour};color:#fff;border-radius:10px;white-space:nowrap;'
        f'display:inline-block;padding:1px 8px;font-size:12px">{html.escape(status.replace("_", " "))}</span>'
    )


def header_html(s: Snapshot) -> str:
    """Name, prompt and parameters: the part of the live view that does not change."""
    name = f"<b>{html.escape(s.name)}</b> · " if s.name else ""
    lab = f"<i>{html.escape(label_text(s.label))}</i> · " if s.label else ""
    sim = f'<div class="kling-sim" style="{NOTE_STYLE}">{html.escape(SIMULATED_NOTE)}</div>' if s.simulated else ""
    return (
        f'<div class="kling-header">{name}{lab}<span style="color:{MUTED}">{html.escape(params_text(s.body))}</span>'
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
    message = error_text(s)
    error = f'<div class="kling-error" style="color:{ERROR}">{html.escape(message)}</div>' if message else ""
    return (
        f'<div class="kling-card" data-status="{html.escape(s.status, quote=True)}">{head}'
        f'<div style="display:flex;gap:8px;align-items:center;font-size:12px">{badge_html(s.status)}'
        f'<progress class="kling-progress" max="100" value="{s.progress}" style="width:{120 if compact else 220}px">'
        f"{s.progress}%</progress><span>{s.progress}%</span>"
        f'<span class="kling-elapsed">{elapsed_text(s.elapsed_s)}</span>'
        f'<span style="color:{MUTED}">{task}</span>'
        f"{f'<span>waiting for {html.escape(s.waiting_for)}</span>' if s.waiting_for else ''}</div>"
        f'{f"""<div style="font-size:12px;color:{MUTED}">{html.escape(origin)}</div>""" if origin else ""}{error}</div>'
    )


def grid_columns(count: int) -> int:
    """2 x 2 for four tiles, otherwise up to three across."""
    return 2 if count == 4 else max(1, min(count, 3))


def video_tag(media: Media, *, attrs: str, style: str) -> str:
    """A <video> with its still: as the poster (inline, since JupyterLab rewrites only src and
    href, so a relative poster would not load there), as an <img> of the still's file inside
    the <video> for viewers whose sanitizer strips <video> (not drawn where the video plays),
    and a link."""
    src = html.escape(media.src, quote=True)
    poster = f' poster="data:image/jpeg;base64,{media.still}"' if media.still else ""
    still = (
        f'<img src="{html.escape(media.still_src, quote=True)}" alt="still of the video" style="{style}">'
        if media.still_src
        else ""
    )
    link = "" if media.src.startswith("data:") else f'<br><a href="{src}">{src}</a>'
    return f'<video src="{src}"{poster} {attrs} style="{style}">{still}{link}</video>'


def video_html(s: Snapshot, media: Media, *, width: int = 480, caption: bool = True) -> str:
    """The final saved output of a finished generation: the video, its still, a caption, a link."""
    link = "" if media.src.startswith("data:") else media.src
    text = " · ".join(
        x
        for x in (
            f"<b>{html.escape(s.name)}</b>" if s.name else "",
            html.escape(_excerpt(s.prompt)),
            html.escape(params_text(s.body)),
            f'<a href="{html.escape(link, quote=True)}" download>{html.escape(link)}</a>' if link else "",
            f"task {html.escape(s.task_id)}" if s.task_id else "",
            html.escape(ORIGIN_TEXT.get(s.origin, "")),
            html.escape(media.note),
            "simulated" if s.simulated else "",
        )
        if x
    )
    video = video_tag(
        media,
        attrs='controls loop muted playsinline preload="metadata"',
        style=f"max-width:100%;width:{width}px;display:block",
    )
    caption_html = f'<div class="kling-caption" style="font-size:12px;color:{TEXT}">{text}</div>' if caption else ""
    return f'<div class="kling-result">{video}{caption_html}</div>'


def failure_html(s: Snapshot) -> str:
    """The final output of a generation that failed or could not be saved: the service's
    code and message as text, never as markup."""
    title = html.escape(s.name or "kling")
    return (
        f'<div class="kling-error" style="border-left:3px solid {ERROR};padding:4px 8px;color:{TEXT}">'
        f"<b>{title}</b>: {badge_html(s.status)} {html.escape(error_text(s) or '')}"
        f'<div style="font-size:12px;color:{MUTED}">{html.escape(_excerpt(s.prompt))} · '
        f"{html.escape(params_text(s.body))}{' · task ' + html.escape(s.task_id) if s.task_id else ''}</div></div>"
    )


def generation_html(s: Snapshot, media: Media | None = None) -> str:
    """Whatever is most useful now: the video, the error, or a status card."""
    if media is not None and s.status == "completed":
        return video_html(s, media)
    if error_text(s) or s.status in ("failed", "unknown", "detached"):
        return failure_html(s)
    return (
        f'<div class="kling-pending">{header_html(s)}{badge_html(s.status)} {s.progress}% · '
        f"{elapsed_text(s.elapsed_s)}{' · task ' + html.escape(s.task_id) if s.task_id else ''}</div>"
    )


def final_bundle(s: Snapshot, media: Media | None = None) -> dict[str, str]:
    """The mime bundle a cell is left with: text/html, the still (image/jpeg) for viewers that
    show images rather than HTML video, and the text/plain fallback."""
    bundle = {"text/html": generation_html(s, media), "text/plain": status_line(s)}
    if media is not None and media.still:
        bundle["image/jpeg"] = media.still
    return bundle


def grid_html(items: list[tuple[Snapshot, Media | None]], *, columns: int | None = None, title: str = "") -> str:
    """A labelled grid of videos with play/pause/seek/loop controls that drive every tile
    together. The script builds the controls: where scripts do not run (an untrusted notebook,
    GitHub, a sanitizer) there are no dead buttons, just the grid of videos and stills."""
    cols = columns or grid_columns(len(items))
    grid_id = f"kling-grid-{uuid.uuid4().hex[:12]}"
    tiles = []
    for s, media in items:
        label = html.escape(label_text(s.label) or s.name or _excerpt(s.prompt, 40))
        if media is not None and s.status == "completed":
            body = video_tag(media, attrs='muted playsinline preload="auto" controls', style="width:100%;display:block")
        elif error_text(s) or s.done:
            body = (
                f'<div class="kling-error" style="padding:8px;border:1px solid {ERROR};color:{TEXT}">'
                f"✗ {html.escape(s.status)}: {html.escape(error_text(s) or '')}</div>"
            )
        else:
            body = f'<div style="padding:8px;border:1px dashed {BORDER}">{html.escape(s.status)} {s.progress}%</div>'
        tiles.append(
            f'<figure class="kling-tile" style="margin:0">{body}'
            f'<figcaption style="font-size:12px;text-align:center;color:{TEXT}">{label}</figcaption></figure>'
        )
    heading = f'<div style="font-weight:bold;color:{TEXT}">{html.escape(title)}</div>' if title else ""
    sim = any(s.simulated for s, _ in items)
    note = f'<div class="kling-sim" style="{NOTE_STYLE}">{html.escape(SIMULATED_NOTE)}</div>' if sim else ""
    return (
        f'<div class="kling-grid" id="{grid_id}">{heading}{note}'
        f'<div class="kling-grid-tiles" style="display:grid;grid-template-columns:repeat({cols},minmax(0,1fr));'
        f'gap:8px">{"".join(tiles)}</div>'
        f"<script>{_LOCKSTEP_JS % json.dumps(grid_id)}</script></div>"
    )


# Plays every video of one grid together. The longest clip leads and sets the loop: shorter
# clips follow its clock while it is within their length, then hold their last frame until
# the longest ends and all start again. The seek bar spans the longest clip. The controls
# are made here, so nothing dead shows where this script does not run.
_LOCKSTEP_JS = """(function(){
var root=document.getElementById(%s); if(!root) return;
var vids=Array.prototype.slice.call(root.querySelectorAll('video')); if(!vids.length) return;
var bar=document.createElement('div'); bar.className='kling-grid-controls'; bar.style.margin='4px 0';
bar.innerHTML='<button data-act="play">\u25b6 Play all</button> '+
 '<button data-act="pause">\u275a\u275a Pause all</button> '+
 '<input data-act="seek" type="range" min="0" max="1000" value="0" style="width:200px"> '+
 '<label><input data-act="loop" type="checkbox" checked> loop</label>';
root.insertBefore(bar, root.querySelector('.kling-grid-tiles'));
var looping=true;
function each(f){vids.forEach(f);}
function lead(){var best=vids[0];each(function(v){if((v.duration||0)>(best.duration||0)){best=v;}});return best;}
function place(v,t){var end=(v.duration||0)-0.05; v.currentTime=Math.max(0,Math.min(t,end));}
function sync(){var l=lead(),t=l.currentTime;each(function(v){if(v===l){return;}
 if(v.duration&&t>=v.duration-0.05){if(!v.paused){v.pause();}place(v,t);}
 else{if(Math.abs(v.currentTime-t)>0.1){v.currentTime=t;}if(!l.paused&&v.paused){v.play();}}});}
function play(){sync();each(function(v){v.loop=false;v.muted=true;
 if(!(v.duration&&v.currentTime>=v.duration-0.05)){v.play();}});}
function pause(){each(function(v){v.pause();});sync();}
bar.querySelector('[data-act=play]').onclick=play;
bar.querySelector('[data-act=pause]').onclick=pause;
var seek=bar.querySelector('[data-act=seek]');
seek.oninput=function(){var l=lead();if(l.duration){var t=l.duration*seek.value/1000;each(function(v){place(v,t);});}};
bar.querySelector('[data-act=loop]').onchange=function(e){looping=e.target.checked;};
each(function(v){v.loop=false;
 v.addEventListener('timeupdate',function(){var l=lead();if(v!==l){return;}
  if(l.duration){seek.value=Math.round(1000*l.currentTime/l.duration);}if(!l.paused){sync();}});
 v.addEventListener('ended',function(){if(v===lead()&&looping){each(function(x){x.currentTime=0;});play();}});});
root.kling={videos:vids,play:play,pause:pause,lead:lead};
})();"""


def grid_text(snaps: list[Snapshot]) -> str:
    return "\n".join(status_line(s) for s in snaps)


def grid_bundle(
    items: list[tuple[Snapshot, Media | None]], *, title: str = "", still: str | None = None
) -> dict[str, str]:
    bundle = {"text/html": grid_html(items, title=title), "text/plain": grid_text([s for s, _ in items])}
    if still:
        bundle["image/jpeg"] = still
    return bundle


def dry_run_text(request, base_url: str, *, simulated: bool = False) -> str:
    """What a person checks before paying: the exact body, the curl command, the bill."""
    uploads = ""
    if request.uploads:
        # Paths relative to the notebook: a saved output never shows this machine's folders.
        lines = [
            f"  {'.'.join(map(str, u.where))}: {os.path.relpath(u.path)} ({u.mime}, {u.size:,} bytes)"
            for u in request.uploads
        ]
        uploads = "Local files uploaded first (their URLs replace the paths):\n" + "\n".join(lines) + "\n"
    warnings = "".join(f"warning: {w}\n" for w in request.warnings)
    return (
        f"Dry run: nothing was sent.\nBilled as: {request.billing_class}\n{warnings}{uploads}"
        f"Body:\n{json.dumps(request.body, indent=2, ensure_ascii=False)}\n"
        f"Equivalent request (key redacted):\n{request.curl(base_url)}"
        + (
            "\nNo key is set: a real run of this cell would go to kling_nb's embedded simulator (free)."
            if simulated
            else ""
        )
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
