"""The poll schedule: the vendor's rhythm until progress lets us predict the end."""

import pytest

from kling_nb.engine.schedule import PollSchedule
from kling_nb.errors import ConfigError

S = PollSchedule(first_s=5, interval_s=10, min_s=0.5, margin_s=0.15, max_s=30)


def test_first_look_follows_the_vendor():
    default = PollSchedule()
    assert (default.first_s, default.interval_s) == (5, 10)  # vendor: first look after ~5 s, then ~10 s
    assert default.next_delay([]) == (5, False)
    assert default.next_delay([(5.0, 0)]) == (10, False)


def test_without_rising_progress_keeps_the_steady_rhythm():
    assert S.next_delay([(5.0, 0)]) == (10, False)
    assert S.next_delay([(5.0, 10)]) == (10, False)  # one sample: no rate yet
    assert S.next_delay([(5.0, 10), (15.0, 10)]) == (10, False)  # stalled


def test_prediction_lands_just_after_the_predicted_end():
    # 10 %/s from t=5 (p=10) to t=6 (p=20): 80 % left -> 8 s
    delay, expects_done = S.next_delay([(5.0, 10), (6.0, 20)])
    assert delay == pytest.approx(8.15) and expects_done


def test_a_30s_task_needs_fewer_looks_than_the_vendor_rhythm():
    # progress as the simulator reports it for a 3 s queue + 27 s run: looks at 5, 15, then the end
    delay, expects_done = S.next_delay([(5.0, 7), (15.0, 44)])
    assert 15 + delay == pytest.approx(30.2, abs=0.5) and expects_done


def test_a_distant_end_is_looked_at_every_max_s():
    assert S.next_delay([(0.0, 1), (10.0, 2)]) == (30, False)


def test_imminent_end_uses_the_min_spacing():
    assert S.next_delay([(0.0, 10), (1.0, 99.9)]) == (0.5, True)


def test_an_end_that_does_not_come_backs_off_towards_the_rhythm():
    samples = [(0.0, 10), (1.0, 100)]
    assert [S.next_delay(samples, misses=m)[0] for m in (1, 2, 3, 5)] == [1.0, 2.0, 4.0, 10]


def test_a_late_estimate_is_followed_not_backed_off():
    # the first guess was early; the new samples say 20 s remain: look then, not in 1 s
    samples = [(0.0, 10), (10.0, 20), (20.0, 25)]
    delay, _ = S.next_delay(samples, misses=1)
    assert delay > 20


def test_rejects_nonsense():
    with pytest.raises(ConfigError):
        PollSchedule(min_s=0)
    with pytest.raises(ConfigError):
        PollSchedule(min_s=20, interval_s=10)
