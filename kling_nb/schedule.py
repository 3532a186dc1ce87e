"""When to look at a task next: the vendor's rhythm, sharpened by the progress it reports.

The vendor's guidance is to look first after about 5 s and then about every 10 s. Polling at
that fixed rhythm finds a finished video 5 s late on average. The service reports progress
(0-100), so once two samples show progress rising we can predict the completion time and
look right then: the same number of requests or fewer, and the finished video is seen
within a fraction of a second. Near the predicted end, polls tighten to `min_s`; if the
prediction was wrong they back off again towards `interval_s`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class PollSchedule:
    first_s: float = 5.0  # first look (vendor: ~5 s)
    interval_s: float = 10.0  # steady rhythm (vendor: ~10 s)
    min_s: float = 0.5  # tightest spacing, used only around the predicted completion
    margin_s: float = 0.15  # look this long after the predicted end, not before it

    def __post_init__(self):
        if not (0 < self.min_s <= self.interval_s and self.first_s >= 0):
            raise ConfigError(
                f"the poll schedule needs 0 < poll_min_s <= poll_interval_s and poll_first_s >= 0 "
                f"(got first {self.first_s}, interval {self.interval_s}, min {self.min_s})"
            )

    def next_delay(self, samples: list[tuple[float, int]], misses: int = 0) -> float:
        """Seconds until the next status request.

        `samples` are (monotonic time, progress) pairs from earlier polls of this task, oldest
        first; `misses` counts polls made at or after a predicted completion that found the
        task still running (each one doubles the wait, so a bad prediction costs little).
        """
        if not samples:
            return self.first_s
        eta = self.predicted_remaining(samples)
        if eta is None:
            return self.interval_s
        if misses:
            return min(self.interval_s, self.min_s * 2**misses)
        return max(self.min_s, min(self.interval_s, eta + self.margin_s))

    @staticmethod
    def predicted_remaining(samples: list[tuple[float, int]]) -> float | None:
        """Seconds from the last sample to progress 100, from the rate between the first sample
        with progress and the last; None while there is no rising progress to go on."""
        rising = [(t, p) for t, p in samples if p > 0]
        if len(rising) < 2:
            return None
        (t0, p0), (t1, p1) = rising[0], rising[-1]
        if p1 <= p0 or t1 <= t0:
            return None
        rate = (p1 - p0) / (t1 - t0)
        return max(0.0, (100 - p1) / rate)
