"""Where a secret could hide after an error: the local variables of a traceback's frames (what
`%xmode Verbose` prints)."""

from __future__ import annotations


def frames_holding(tb, needle: str, *, only_kling_nb: bool = False) -> list[str]:
    """`function:variable` for every frame local whose repr (or whose attributes' repr) holds
    `needle`; with `only_kling_nb`, only frames of kling_nb's own code."""
    found = []
    while tb is not None:
        frame = tb.tb_frame
        if not only_kling_nb or "kling_nb" in frame.f_code.co_filename:
            for name, value in frame.f_locals.items():
                try:
                    shown = repr(value) + (repr(vars(value)) if hasattr(value, "__dict__") else "")
                except Exception:
                    shown = ""
                if needle in shown:
                    found.append(f"{frame.f_code.co_name}:{name}")
        tb = tb.tb_next
    return found
