"""Frames out of a finished video: the poster still a saved notebook carries, and any frame as
an image (the first, the last, or the one at a time in seconds).

PyAV and Pillow are imported inside the functions: they are needed once a video exists, never
to load kling_nb or to submit.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from ..errors import KlingError
from .files import atomic_file

log = logging.getLogger("kling_nb.frames")

POSTER_WIDTH = 320
POSTER_MAX_BYTES = 20_000  # a notebook with ten results stays small (docs/design-notes.md section 6)
_MEANINGFUL_STDDEV = 4.0  # a frame flatter than this (black, a fade) is not a useful still
_LOOK_S = 1.5  # how far into the clip a meaningful first frame is looked for


def poster_path(video: Path) -> Path:
    return video.with_suffix(".jpg")


def ensure_poster(video: Path) -> Path | None:
    """The video's poster, made if it is missing; None if the video cannot give one (a poster
    is a nicety: its absence never fails a generation)."""
    dest = poster_path(video)
    if dest.is_file() and not dest.is_symlink():
        return dest
    try:
        return make_poster(video)
    except Exception:
        log.warning("no poster for %s", video.name, exc_info=True)
        return None


def make_poster(video: Path) -> Path:
    """Write `<video>.jpg` beside the video: the first meaningful frame, scaled to at most
    POSTER_WIDTH and compressed under POSTER_MAX_BYTES. Atomic (temporary file, then rename)."""
    image = _first_meaningful(video)
    if image.width > POSTER_WIDTH:
        image = image.resize((POSTER_WIDTH, max(2, round(image.height * POSTER_WIDTH / image.width))))
    data = b""
    for quality in (70, 55, 40, 25):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
        data = buffer.getvalue()
        if len(data) <= POSTER_MAX_BYTES:
            break
    dest = poster_path(video)
    with atomic_file(dest) as f:
        f.write(data)
    return dest


def save_frame(video: Path, which: str | float, folder: Path) -> Path:
    """A frame written as PNG (lossless: the upload is exactly the frame) into `folder`, named
    after the video and the frame; atomic."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = which if isinstance(which, str) else f"{float(which):g}s"
    dest = folder / f"{video.stem}-{tag}.png"
    with atomic_file(dest) as f:
        frame(video, which).save(f, "PNG")
    return dest


def frame(video: Path, which: str | float = "last") -> Any:
    """One frame as a PIL image: "first", "last" (the real last decoded frame, found by seeking
    near the end rather than decoding from the start), or a time in seconds."""
    import av

    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            if which == "first":
                return next(container.decode(stream)).to_image()
            if which == "last":
                return _last(container, stream)
            at = float(which)
            if at < 0:
                raise KlingError(f"a frame time must be 0 or more seconds, not {which}")
            return _at(container, stream, at)
    except (av.error.FFmpegError, StopIteration, IndexError) as err:
        raise KlingError(f"cannot read a frame of {video.name}: {type(err).__name__}") from None


def frames(video: Path) -> Any:
    """Every frame as an RGB numpy array (height x width x 3), decoded as it is iterated."""
    import av

    with av.open(str(video)) as container:
        for f in container.decode(container.streams.video[0]):
            yield f.to_ndarray(format="rgb24")


def _first_meaningful(video: Path) -> Any:
    import av
    from PIL import ImageStat

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        first = None
        for f in container.decode(stream):
            image = f.to_image()
            first = first or image
            if max(ImageStat.Stat(image.convert("L")).stddev) >= _MEANINGFUL_STDDEV:
                return image
            if f.time is not None and f.time > _LOOK_S:
                break
    if first is None:
        raise KlingError(f"{video.name} has no video frames")
    return first


def _last(container: Any, stream: Any) -> Any:
    """Seek to the last keyframe before the end, then decode to the end: the real last frame."""
    duration = _duration_s(container, stream)
    if duration is not None and stream.time_base:
        for back in (1.0, 3.0, None):  # widen the window if no keyframe lies within it
            if back is None:
                container.seek(0)
            else:
                container.seek(max(0, int((duration - back) / stream.time_base)), stream=stream, backward=True)
            last = None
            for f in container.decode(stream):
                last = f
            if last is not None:
                return last.to_image()
    last = None
    for f in container.decode(stream):
        last = f
    if last is None:
        raise StopIteration
    return last.to_image()


def _at(container: Any, stream: Any, at: float) -> Any:
    container.seek(max(0, int(at / stream.time_base)) if stream.time_base else 0, stream=stream, backward=True)
    chosen = None
    for f in container.decode(stream):
        if chosen is not None and f.time is not None and f.time > at + 1e-6:
            break
        chosen = f
    if chosen is None:
        raise StopIteration
    return chosen.to_image()


def _duration_s(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None
