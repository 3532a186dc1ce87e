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


def test_loading_keeps_another_extensions_exception_handler_and_errors_stay_one_line(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    seen = []

    def theirs(shell, etype, evalue, tb, tb_offset=None):
        seen.append(etype.__name__)
        return ["handled by the other extension"]

    try:
        ip.set_custom_exc((ZeroDivisionError,), theirs)
        ip.run_line_magic("load_ext", "kling_nb")
        assert ip.custom_exceptions == (ZeroDivisionError,)  # kling_nb installs no handler of its own
        ip.run_cell("1/0")
        assert seen == ["ZeroDivisionError"]
        ip.run_line_magic("xmode", "Verbose")
        result = ip.run_cell("%%kling\nmode: ultra\n---\nA kite")
        out = capsys.readouterr()
        assert not result.success and "SpecError: `mode` at line 1" in out.out + out.err
        assert "Traceback" not in out.out + out.err  # one line, even in Verbose mode
    finally:
        ip.run_line_magic("xmode", "Context")
        ip.set_custom_exc((), None)
        ip.run_line_magic("unload_ext", "kling_nb")
        InteractiveShell.clear_instance()
