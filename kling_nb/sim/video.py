"""Real, playable H.264 clips that show what was asked for.

Debian's Chromium plays H.264 but not MPEG-4 Part 2 (docs/design-notes.md section 3), so clips are libx264,
yuv420p, with the index first (+faststart) so a browser starts playing before the end
arrives. Each frame shows the prompt, the mode, the duration and the aspect ratio, plus a
moving bar and a clock so motion (and lockstep playback) can be seen. The background drifts
from the first frame to a colour of the prompt's own, so the last frame differs visibly from
the first; a clip asked to start from an image (`first_frame`) opens on exactly that image,
which lets a reader see a continued shot start where the previous one ended.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FPS = 12
LONG_SIDE = 320


def frame_size(aspect_ratio: str) -> tuple[int, int]:
    """Width and height (even numbers) with the long side 320 px."""
    try:
        w, h = (int(x) for x in aspect_ratio.split(":"))
    except ValueError:
        w, h = 16, 9
    if w >= h:
        width, height = LONG_SIDE, round(LONG_SIDE * h / w)
    else:
        width, height = round(LONG_SIDE * w / h), LONG_SIDE
    return max(16, width - width % 2), max(16, height - height % 2)


def render_mp4(
    path: Path, prompt: str, *, mode: str, duration: int, aspect_ratio: str, first_frame: Path | None = None
) -> Path:
    """Write the clip to `path` (a real file: +faststart rewrites it in a second pass)."""
    width, height = frame_size(aspect_ratio)
    start = None
    if first_frame is not None:
        try:
            start = Image.open(first_frame).convert("RGB").resize((width, height))
        except OSError:
            start = None
    tint = tuple(hashlib.sha256(prompt.encode()).digest()[:3])
    # Layout uses the pixel sizes asked for (what a FreeType font's .size reports back; the
    # bitmap fallback load_default() may return has no .size).
    font_px = max(9, min(width, height) // 14)
    small_px = max(8, min(width, height) // 18)
    font = ImageFont.load_default(size=font_px)
    small = ImageFont.load_default(size=small_px)
    chars = max(12, width // max(5, font_px // 2 + 1))
    lines = textwrap.wrap(" ".join(prompt.split()), chars)[: max(1, (height - 60) // (font_px + 3))]
    base = Image.new("RGB", (width, height), (24, 28, 40))
    draw = ImageDraw.Draw(base)
    y = 6
    for line in lines:
        draw.text((6, y), line, font=font, fill=(235, 235, 235))
        y += font_px + 3
    info = f"{mode} · {duration}s · {aspect_ratio} · simulated"
    draw.text((6, height - small_px * 2 - 10), info, font=small, fill=(250, 200, 80))

    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "30"}
        total = duration * FPS
        for i in range(total):
            t = i / max(1, total - 1)
            if start is not None and i == 0:
                img = start.copy()  # exactly the image it was asked to start from
            else:
                background = Image.blend(
                    start or Image.new("RGB", (width, height), (24, 28, 40)),
                    Image.new("RGB", (width, height), tint),
                    0.6 * t,
                )
                img = Image.composite(base, background, base.convert("L").point(lambda v: 255 if v > 60 else 0))
            d = ImageDraw.Draw(img)
            x = int((width - 24) * i / max(1, total - 1))
            if start is not None and i == 0:
                frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                continue
            d.rectangle([x, height - 8, x + 24, height - 2], fill=(80, 180, 255))
            d.text(
                (width - 6 * small_px // 2 - 30, height - small_px - 10),
                f"{i / FPS:4.1f}s",
                font=small,
                fill=(180, 180, 180),
            )
            frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
