"""The public surface: what `kling_nb` exports, and the help a user reads in `%%kling?`."""

from __future__ import annotations

import kling_nb
from kling_nb.notebook.magics import CELL_HELP, KlingMagics


def test_exported_members():
    assert {
        "parse",
        "parse_batch",
        "generate",
        "compare",
        "KlingError",
        "SpecError",
        "Generation",
        "load_ipython_extension",
    } <= set(kling_nb.__all__)
    for name in kling_nb.__all__:
        assert getattr(kling_nb, name) is not None
    assert issubclass(kling_nb.SpecError, kling_nb.KlingError)


def test_every_option_and_command_is_documented():
    for option in ("--name", "--wait", "--force", "--dry-run", "--yes"):
        assert option in CELL_HELP and option in KlingMagics.kling.__doc__
    for command in ("wait", "list", "history", "show", "compare", "resume", "login", "status"):
        assert f"%kling {command}" in KlingMagics.kling_line.__doc__


def test_every_setting_has_help():
    for name, trait in KlingMagics.class_traits(config=True).items():
        assert trait.help, name
