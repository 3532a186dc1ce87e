"""Sweeps and variants: what expands to what, and the labels that tell tiles apart."""

from __future__ import annotations

import pytest

from kling_nb import SpecError, parse, parse_batch


@pytest.mark.parametrize(
    "header, bodies, labels",
    [
        (
            "sweep:\n  mode: [std, pro]\n  duration: [5, 10]",
            [("std", 5), ("std", 10), ("pro", 5), ("pro", 10)],
            [
                {"mode": "std", "duration": 5},
                {"mode": "std", "duration": 10},
                {"mode": "pro", "duration": 5},
                {"mode": "pro", "duration": 10},
            ],
        ),
        (
            "mode: pro\nsweep:\n  duration: [5, 10]",
            [("pro", 5), ("pro", 10)],
            [{"duration": 5}, {"duration": 10}],
        ),
        (
            "sweep:\n  mode: [std]\n  duration: [5, 10]",  # a one-value field does not differ: not in labels
            [("std", 5), ("std", 10)],
            [{"duration": 5}, {"duration": 10}],
        ),
        (
            "variants:\n  - {mode: std}\n  - {mode: pro, duration: 10}",
            [("std", None), ("pro", 10)],
            [{"mode": "std"}, {"mode": "pro", "duration": 10}],  # no "duration=None"
        ),
        (
            "variants:\n  - {mode: std}\n  - {mode: pro}\nsweep:\n  duration: [5, 10]",
            [("std", 5), ("std", 10), ("pro", 5), ("pro", 10)],
            [
                {"mode": "std", "duration": 5},
                {"mode": "std", "duration": 10},
                {"mode": "pro", "duration": 5},
                {"mode": "pro", "duration": 10},
            ],
        ),
    ],
    ids=["2x2", "fixed-plus-sweep", "single-value-not-labelled", "variants", "variants-x-sweep"],
)
def test_expansion_and_labels(header, bodies, labels):
    batch = parse_batch(header + "\n---\nA hummingbird")
    assert [(r.body.get("mode"), r.body.get("duration")) for r in batch.requests] == bodies
    assert [r.label for r in batch.requests] == labels
    assert all(r.body["prompt"] == "A hummingbird" for r in batch.requests)


def test_variant_may_change_the_prompt():
    batch = parse_batch("aspect_ratio: 1:1\nvariants:\n  - prompt: A lighthouse\n  - prompt: A ship\n---\n")
    assert [r.body["prompt"] for r in batch.requests] == ["A lighthouse", "A ship"]
    assert [r.label for r in batch.requests] == [{"prompt": "A lighthouse"}, {"prompt": "A ship"}]
    assert all(r.body["aspect_ratio"] == "1:1" for r in batch.requests)


def test_variants_override_the_cell_prompt():
    batch = parse_batch("variants:\n  - {}\n  - prompt: A ship\n---\nA lighthouse")
    assert [r.body["prompt"] for r in batch.requests] == ["A lighthouse", "A ship"]


def test_each_variant_is_validated():
    with pytest.raises(SpecError, match="5 or 10"):
        parse_batch("sweep:\n  duration: [5, 7]\n---\nA kite")


@pytest.mark.parametrize(
    "header, match",
    [
        ("sweep:\n  mode: []", "non-empty list"),
        ("sweep:\n  mode: pro", "non-empty list"),
        ("sweep: [mode]", "map fields"),
        ("variants: {mode: pro}", "list of partial headers"),
        ("variants: []", "list of partial headers"),
        (
            "sweep:\n  prompt: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o]\n  duration: [5, 10]\n"
            "  mode: [std, pro]\n  aspect_ratio: ['16:9', '9:16', '1:1', '4:3']",
            "at most 200",
        ),
    ],
    ids=["empty", "not-a-list", "not-a-mapping", "variants-not-a-list", "variants-empty", "too-many"],
)
def test_bad_sweeps(header, match):
    with pytest.raises(SpecError, match=match):
        parse_batch(header + "\n---\nA kite")


def test_parse_refuses_a_sweep():
    with pytest.raises(SpecError, match="parse_batch"):
        parse("sweep:\n  mode: [std, pro]\n---\nA kite")
