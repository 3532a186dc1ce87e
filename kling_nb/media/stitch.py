"""Clips cut together into one film, in order.

When every clip has the same video stream (codec, size, pixel format), the packets are
copied without re-encoding (a remux: about the cost of copying the bytes). Otherwise every
clip is decoded and re-encoded as H.264 at the first clip's size (std 720P and pro 1080P
shots can be mixed). Audio is kept when every clip has it. The film is written to a
temporary file, checked to play for the summed length, then renamed into place.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import KlingError
from .files import atomic_path

DURATION_SLACK_S = 0.25  # per clip: container and frame rounding


def stitch(clips: list[Path], dest: Path) -> Path:
    import av

    if not clips:
        raise KlingError("nothing to stitch: no clips were given")
    try:
        with atomic_path(dest) as tmp:
            _write_film(clips, tmp)
        return dest
    except av.error.FFmpegError as err:
        raise KlingError(f"could not stitch the clips: {type(err).__name__}") from None


def _write_film(clips: list[Path], tmp: Path) -> None:
    infos = [_info(c) for c in clips]
    same = all(i[:3] == infos[0][:3] for i in infos)
    audio = all(i[3] for i in infos)
    if same:
        _remux(clips, tmp, audio)
    else:
        _reencode(clips, tmp, infos[0][1], infos[0][2], audio)
    expected = sum(i[4] for i in infos)
    got = probe_duration(tmp)  # the film plays, and for as long as its clips together
    if abs(got - expected) > DURATION_SLACK_S * len(clips):
        raise KlingError(f"the stitched film lasts {got:.2f} s, not the {expected:.2f} s of its clips")


def probe_duration(path: Path) -> float:
    """The film's length, by decoding every frame (a film that does not decode is an error)."""
    import av

    last = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = 0
        for frame in container.decode(stream):
            frames += 1
            if frame.time is not None:
                last = max(last, frame.time)
        rate = float(stream.average_rate or stream.guessed_rate or 0)
    if frames == 0:
        raise KlingError(f"{path.name} has no playable frames")
    return last + (1 / rate if rate else 0.0)


def _info(path: Path) -> tuple[str, int, int, bool, float]:
    """(codec, width, height, has audio, duration in seconds)."""
    import av

    with av.open(str(path)) as container:
        v = container.streams.video[0]
        if v.duration and v.time_base:
            duration = float(v.duration * v.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        else:
            raise KlingError(f"{path.name} does not say how long it lasts")
        return v.codec_context.name, v.width, v.height, bool(container.streams.audio), duration


def _remux(clips: list[Path], dest: Path, audio: bool) -> None:
    import av

    with av.open(str(dest), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        first = av.open(str(clips[0]))
        ov = out.add_stream_from_template(first.streams.video[0])
        oa = out.add_stream_from_template(first.streams.audio[0]) if audio else None
        first.close()
        offsets = {"v": 0, "a": 0}
        for clip in clips:
            with av.open(str(clip)) as src:
                streams = [src.streams.video[0]] + ([src.streams.audio[0]] if audio else [])
                ends = {"v": offsets["v"], "a": offsets["a"]}
                for packet in src.demux(streams):
                    if packet.dts is None:
                        continue
                    kind = "v" if packet.stream.type == "video" else "a"
                    target = ov if kind == "v" else oa
                    assert target is not None  # audio packets are demuxed only when `oa` was made
                    shift = _rescale(offsets[kind], target.time_base, packet.stream.time_base)
                    packet.dts += shift
                    packet.pts = (packet.pts if packet.pts is not None else packet.dts - shift) + shift
                    end = _rescale(packet.pts + (packet.duration or 0), packet.stream.time_base, target.time_base)
                    ends[kind] = max(ends[kind], end)
                    packet.stream = target
                    out.mux(packet)
                offsets = ends


def _rescale(value: int, from_base: Any, to_base: Any) -> int:
    return int(Fraction(value) * Fraction(from_base) / Fraction(to_base))


def _reencode(clips: list[Path], dest: Path, width: int, height: int, audio: bool) -> None:
    import av

    with av.open(str(dest), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        with av.open(str(clips[0])) as first:
            rate = first.streams.video[0].average_rate or 24
        ov = out.add_stream("libx264", rate=rate)
        ov.width, ov.height, ov.pix_fmt = width, height, "yuv420p"
        ov.options = {"preset": "veryfast", "crf": "20"}
        oa = out.add_stream("aac", rate=48000) if audio else None
        n = 0
        for clip in clips:
            with av.open(str(clip)) as src:
                for frame in src.decode(src.streams.video[0]):
                    frame = frame.reformat(width=width, height=height, format="yuv420p")
                    frame.pts, frame.time_base = n, Fraction(1, 1) / Fraction(rate)
                    n += 1
                    for packet in ov.encode(frame):
                        out.mux(packet)
                if oa is not None:
                    src.seek(0)
                    for sound in src.decode(src.streams.audio[0]):
                        sound.pts = None
                        for packet in oa.encode(sound):
                            out.mux(packet)
        for packet in ov.encode():
            out.mux(packet)
        if oa is not None:
            for packet in oa.encode():
                out.mux(packet)
