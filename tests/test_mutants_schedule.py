"""The poll schedule at its edges (gaps found by mutation testing, `make mutate`): the settings it
accepts, the back-off after a missed end, and a prediction taken from the right samples."""

import pytest

from kling_nb.engine.schedule import PollSchedule
from kling_nb.errors import ConfigError

# margin 0 so a prediction is the look; 10 %/s between two looks one second apart
S = PollSchedule(first_s=5, interval_s=10, min_s=0.5, margin_s=0.0, max_s=30)


def ending_in(seconds: float) -> list[tuple[float, int]]:
    """Two looks, one second apart, that predict the end `seconds` after the second one."""
    last = 100 - round(10 * seconds)
    return [(0.0, last - 10), (1.0, last)]


@pytest.mark.parametrize(
    "settings",
    [
        {"first_s": 0},  # look at once
        {"interval_s": 30, "max_s": 30},  # a steady rhythm as slow as the slowest look
        {"min_s": 10, "interval_s": 10},  # no faster looks near the end than the rhythm
    ],
)
def test_settings_at_their_limits_are_accepted(settings):
    PollSchedule(**settings)


def test_refused_settings_say_which_rule_and_the_values():
    with pytest.raises(ConfigError) as caught:
        PollSchedule(first_s=-1)
    assert "poll_first_s >= 0" in str(caught.value) and "got first -1" in str(caught.value)


@pytest.mark.parametrize("misses, backoff", [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)])
def test_after_a_missed_end_the_next_look_waits_for_the_doubled_backoff(misses, backoff):
    # a prediction just short of the backoff: wait the backoff, still expecting the end
    assert S.next_delay(ending_in(backoff - 0.4), misses=misses) == (pytest.approx(backoff), True)
    # a prediction past it: follow the prediction
    assert S.next_delay(ending_in(backoff + 0.4), misses=misses) == (pytest.approx(backoff + 0.4), True)


def test_a_prediction_exactly_at_the_backoff_point_is_followed():
    # five misses: the backoff (0.5 * 2**5 = 16 s) is past the steady 10 s rhythm; an estimate of
    # exactly 16 s is a late estimate, followed (16 s), not cut to the rhythm
    schedule = PollSchedule(first_s=5, interval_s=10, min_s=0.5, margin_s=1.0, max_s=30)
    assert schedule.next_delay([(0.0, 20), (1.0, 25)], misses=5) == (16.0, True)


def test_an_end_exactly_max_s_away_is_looked_at_then_expecting_the_end():
    # 2 %/s, 60 % left: the end is exactly 30 s (max_s) away
    assert S.next_delay([(0.0, 38), (1.0, 40)]) == (30.0, True)


def test_two_looks_at_the_same_instant_predict_nothing_rather_than_fail():
    # an injected or coarse clock can give two samples the same time
    assert PollSchedule.predicted_remaining([(3.0, 10), (3.0, 20)]) is None
    assert S.next_delay([(3.0, 10), (3.0, 20)]) == (10, False)


def test_the_rate_starts_when_progress_starts_not_while_queued():
    # queued at 0 % for 20 s, then 10 %/s: 80 % left after the last look -> 8 s, not 84 s
    samples = [(0.0, 0), (10.0, 0), (20.0, 10), (21.0, 20)]
    assert PollSchedule.predicted_remaining(samples) == pytest.approx(8.0)


def test_the_rate_spans_the_first_and_the_last_rising_look():
    # 10 -> 40 over 2 s is 15 %/s: 60 % left -> 4 s (the first two looks alone would say 8 s)
    assert PollSchedule.predicted_remaining([(0.0, 10), (1.0, 20), (2.0, 40)]) == pytest.approx(4.0)
