"""When to look at a task next: the vendor's rhythm, sharpened by the progress it reports.

The vendor's guidance is to look first after about 5 s and then about every 10 s. Polling at
that fixed rhythm finds a finished video 5 s late on average. The service reports progress
(0-100), so once two samples show progress rising we can predict the completion time and
look right then: fewer requests than the fixed rhythm, and the finished video is seen within a
fraction of a second. An end further off than `max_s` gets a look every `max_s` (which also
keeps hundreds of long generations cheap), each look sharpening the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class PollSchedule:
    first_s: float = 5.0  # first look (vendor: ~5 s)
    interval_s: float = 10.0  # steady rhythm (vendor: ~10 s)
    min_s: float = 0.5  # tightest spacing, used only around the predicted completion
    margin_s: float = 0.15  # look this long after the predicted end, not before it
    max_s: float = 30.0  # longest spacing, while the predicted end is still far away

    def __post_init__(self) -> None:
        if not (0 < self.min_s <= self.interval_s <= self.max_s and self.first_s >= 0):
            raise ConfigError(
                f"the poll schedule needs 0 < poll_min_s <= poll_interval_s <= max and poll_first_s >= 0 "
                f"(got first {self.first_s}, interval {self.interval_s}, min {self.min_s})"
            )

    def next_delay(self, samples: list[tuple[float, int]], misses: int = 0) -> tuple[float, bool]:
        """(seconds until the next status request, whether that look expects to find the task
        finished).

        `samples` are (monotonic time, progress) pairs from earlier polls of this task, oldest
        first; `misses` counts looks in a row that expected the end and did not find it. Near
        an end that keeps not coming (progress at 100, the service still finishing), looks
        back off from `min_s`, doubling, so a wrong guess costs little.
        """
        if not samples:
            return self.first_s, False
        eta = self.predicted_remaining(samples)
        if eta is None:
            return self.interval_s, False
        wait = eta + self.margin_s
        if misses and wait < self.min_s * 2**misses:
            return min(self.interval_s, self.min_s * 2**misses), True
        if wait > self.max_s:
            return self.max_s, False
        return max(self.min_s, wait), True

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
