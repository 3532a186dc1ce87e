"""A full run with a real key-shaped secret: success, refusal, failure, retries, dry run,
mistakes, listings and reprs. Afterwards the key is in nothing kling_nb left behind."""

from __future__ import annotations

from kling_nb.sim import Faults, SimConfig, Simulator

from .kernel_harness import FAST_CONFIG, SECRET, as_text, notebook, run, sim_env, text_of


def test_the_key_leaves_no_trace(tmp_path):
    with Simulator(key=SECRET, config=SimConfig(queue_s=0.1, run_s=1.0)) as sim:
        sim.set_faults(
            Faults(rate=0.3, kinds=("429", "503", "drop"), seed=7, retry_after=0.05, endpoints=("status", "download"))
        )
        nb = run(
            notebook(
                "import logging\nlogging.basicConfig(filename='kling.log', level=logging.DEBUG, force=True)",
                FAST_CONFIG,
                "%%kling --name good\n---\nA lantern festival",
                "%%kling --name refused\n---\nsim:reject a scene",
                "%%kling --name failing\n---\nsim:fail a scene",
                "%%kling --dry-run\nmode: pro\n---\nA dry run",
                ("%%kling\nmode: nope\n---\nA mistake", ["raises-exception"]),
                "%config KlingMagics.base_url = 'http://example.com'",
                ("%%kling\n---\nx", ["raises-exception"]),
                "%config KlingMagics.base_url = ''",
                "%kling wait",
                "%kling list\n%kling history\n%kling status",
                "import kling_nb\nprint(repr(good), repr(failing.error), repr(refused.error))\n"
                "print(repr(get_ipython().find_magic('kling').__self__.runtime))\n"
                "print(repr(get_ipython().find_magic('kling').__self__.runtime.backend.client))",
            ),
            tmp_path,
            sim_env(sim),
        )
        log = sim.log

    text = as_text(nb)
    assert "A lantern festival" in text and "content_policy_violation" in text  # the run really happened
    assert "$TOAPIS_API_KEY" in text  # the dry run's curl names the variable, not the value
    assert "refusing plain http" in text
    assert "Client(base_url=" in text_of(nb.cells[-1]) and "key=***" in text_of(nb.cells[-1])
    assert any(e["fault"] for e in log)  # faults were injected...
    assert SECRET not in text
    assert SECRET not in (tmp_path / "executed.ipynb").read_text()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the key is in {path}"
    logged = (tmp_path / "kling.log").read_text()
    assert "kling_nb.client:retrying in" in logged  # ...the client retried through them, and logged it (key-free)
