"""The embedded simulator: a real HTTP server on loopback that answers like the service.

    from kling_nb.sim import Simulator, SimConfig, Faults
    with Simulator(config=SimConfig(queue_s=0.1, run_s=0.5)) as sim:
        sim.base_url          # http://127.0.0.1:PORT
        sim.count("submit")   # accepted (billed) submits
        sim.set_faults(Faults(rate=0.2, seed=1))

It follows docs/api-contract.md: the same paths, JSON shapes, status codes and error
bodies, the same validation, real H.264 results that expire. Prompt markers for tests and
teaching: `sim:reject` is refused at submit (422), `sim:fail` ends `failed`.
Private endpoints: GET /_sim/log, GET /_sim/stats, POST /_sim/faults.
"""

from __future__ import annotations

import threading

from .server import FAIL_MARKER, REJECT_MARKER, Faults, SimConfig, SimServer

__all__ = ["Simulator", "SimConfig", "Faults", "FAIL_MARKER", "REJECT_MARKER"]


class Simulator:
    def __init__(self, key: str | None = None, config: SimConfig | None = None, *, host="127.0.0.1", port=0):
        self.config = config or SimConfig()
        self._key = key
        self._address = (host, port)
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Simulator:
        self._server = SimServer(self._address, self.config, self._key)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kling-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Simulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<kling_nb Simulator {self.base_url if self._server else '(stopped)'}>"

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def log(self) -> list[dict]:
        with self._server.state.lock:
            return [dict(e) for e in self._server.state.log]

    def count(self, kind: str) -> int:
        """Accepted (billed) submits for "submit"; requests of that kind otherwise."""
        return self._server.stats().get(kind, 0)

    def accepted_bodies(self) -> list[dict]:
        """The body of every task created (every billed submit), oldest first."""
        with self._server.state.lock:
            return [t.body for t in self._server.state.tasks.values()]

    def set_faults(self, faults: Faults) -> None:
        self._server.state.set_faults(faults)
