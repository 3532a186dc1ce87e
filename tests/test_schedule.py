"""The poll schedule: the vendor's rhythm until progress lets us predict the end."""

import pytest

from kling_nb.errors import ConfigError
from kling_nb.schedule import PollSchedule

S = PollSchedule(first_s=5, interval_s=10, min_s=0.5, margin_s=0.15)


def test_first_look_follows_the_vendor():
    assert S.next_delay([]) == 5


def test_without_rising_progress_keeps_the_steady_rhythm():
    assert S.next_delay([(5.0, 0)]) == 10
    assert S.next_delay([(5.0, 10)]) == 10  # one sample: no rate yet
    assert S.next_delay([(5.0, 10), (15.0, 10)]) == 10  # stalled


def test_prediction_lands_just_after_the_predicted_end():
    # 10 %/s from t=5 (p=10) to t=6 (p=20): 80 % left -> 8 s
    assert S.next_delay([(5.0, 10), (6.0, 20)]) == pytest.approx(8.15)


def test_prediction_never_exceeds_the_rhythm_nor_undercuts_min():
    assert S.next_delay([(0.0, 1), (10.0, 2)]) == 10  # far away: rhythm
    assert S.next_delay([(0.0, 10), (1.0, 99.9)]) == 0.5  # imminent: min spacing


def test_missed_predictions_back_off_towards_the_rhythm():
    samples = [(0.0, 10), (1.0, 100)]
    assert [S.next_delay(samples, misses=m) for m in (1, 2, 3, 5)] == [1.0, 2.0, 4.0, 10]


def test_rejects_nonsense():
    with pytest.raises(ConfigError):
        PollSchedule(min_s=0)
    with pytest.raises(ConfigError):
        PollSchedule(min_s=20, interval_s=10)
