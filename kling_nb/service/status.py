"""A task's state as a plain frozen value, read from the service's task object.

Everything downstream (tracker, journal, widget, HTML) is built from this value, never from
raw JSON, so an extra field or a status the vendor adds later changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..contract import FINAL_STATUSES


@dataclass(frozen=True)
class TaskStatus:
    id: str
    status: str  # queued, in_progress, completed, failed, or any pending status
    progress: int = 0
    created_at: int | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    url: str | None = None
    error_code: str | int | None = None
    error_message: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: Any) -> TaskStatus:
        """Read a task object; raise ValueError if it is not one (no id, no status)."""
        if not isinstance(data, dict):
            raise ValueError("task object is not a JSON object")
        task_id, status = data.get("id"), data.get("status")
        if not isinstance(task_id, str) or not task_id or not isinstance(status, str):
            raise ValueError("task object has no id or status")
        url = None
        result = data.get("result")
        if isinstance(result, dict) and isinstance(result.get("data"), list) and result["data"]:
            first = result["data"][0]
            if isinstance(first, dict) and isinstance(first.get("url"), str):
                url = first["url"]
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        progress = data.get("progress")
        return cls(
            id=task_id,
            status=status,
            progress=max(0, min(100, int(progress))) if isinstance(progress, (int, float)) else 0,
            created_at=_int_or_none(data.get("created_at")),
            completed_at=_int_or_none(data.get("completed_at")),
            expires_at=_int_or_none(data.get("expires_at")),
            url=url,
            error_code=error.get("code"),
            error_message=error.get("message") if isinstance(error.get("message"), str) else None,
        )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
