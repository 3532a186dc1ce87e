"""The one funnel to IPython's display: the live view first, the final result exactly once,
through the same display id, to the cell that started it; and again from a waiting cell."""

from __future__ import annotations

import pytest

from kling_nb import parse
from kling_nb.engine.generation import Generation, State
from kling_nb.notebook import display

from .test_widget import recording  # noqa: F401  (the recording comm fixture)


@pytest.fixture
def published(monkeypatch):
    sent = []
    monkeypatch.setattr(display, "_kernel_shell", lambda: object())  # as in a kernel
    monkeypatch.setattr(display, "current_parent", lambda: {"msg_id": "cell-1"})
    monkeypatch.setattr(display, "publish", lambda bundle, **how: sent.append((bundle, how)))
    return sent


def test_live_view_then_the_final_result_once_to_the_starting_cell(recording, published):  # noqa: F811
    gen = Generation(parse("A kite"), name="kite")
    output = display.CellOutput([gen])
    output.show()
    assert len(published) == 1
    live, how = published[0]
    assert "application/vnd.jupyter.widget-view+json" in live and how["update"] is False
    gen._transition(State.IN_PROGRESS, progress=40)
    assert len(published) == 1  # progress goes to the widget, not to the cell's output
    gen._transition(State.FAILED, error=None)
    output._changed(gen.snapshot())  # a late listener call changes nothing: the result went once
    assert len(published) == 2
    final, how = published[1]
    assert how == {"display_id": output.display_id, "update": True, "parent": {"msg_id": "cell-1"}}
    assert "text/html" in final and "kite" in final["text/plain"] and "widget-view" not in str(final)


def test_a_waiting_cell_sends_the_final_result_again_and_empties_the_live_view(recording, published):  # noqa: F811
    gen = Generation(parse("A kite"), name="kite")
    output = display.CellOutput([gen])
    output.show()
    gen._transition(State.FAILED, error=None)
    output.finalize_here()
    final, how = published[-1]
    assert how == {"display_id": output.display_id, "update": True}  # from the waiting cell itself
    assert output.view.out.outputs == ()


def test_an_output_already_final_is_shown_once_without_a_widget(published):
    gen = Generation(parse("A kite"), name="kite")
    gen._transition(State.FAILED, error=None)
    display.CellOutput([gen]).show()
    assert len(published) == 1 and published[0][1]["update"] is False
    assert "widget-view" not in str(published[0][0])
