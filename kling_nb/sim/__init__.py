"""The embedded simulator: a real HTTP server on loopback that answers like the service.

    from kling_nb.sim import Simulator, SimConfig, Faults, RateCard
    with Simulator(config=SimConfig(queue_s=0.1, run_s=0.5)) as sim:
        sim.base_url          # http://127.0.0.1:PORT
        sim.count("submit")   # accepted (billed) submits
        sim.charges()         # what each accepted submit cost, in credits
        sim.balance("sk-...") # a key's balance, as GET /v1/balance reports it
        sim.set_faults(Faults(rate=0.2, seed=1))

It follows docs/api-contract.md: the same paths, JSON shapes, status codes and error
bodies, the same validation, real H.264 results that expire, and the money endpoints
(GET /v1/balance, GET /v1/user/balance, POST /v1/tokens) with per-key quotas: a submit is
charged at acceptance by `SimConfig.rates` and refused with 402 when the key is short.
`key=None` accepts any non-empty key; `key="X"` accepts X and the keys made with it. Every
account the simulator opens itself starts with `SimConfig.starting_credits` (default: unlimited,
so code that ignores money never meets a 402). Prompt markers for tests and teaching:
`sim:reject` is refused at submit (422), `sim:fail` ends `failed`.
Private endpoints: GET /_sim/log, GET /_sim/stats, POST /_sim/faults.
"""

from __future__ import annotations

import threading

from .server import (
    FAIL_MARKER,
    QUOTA_PER_CREDIT,
    REJECT_MARKER,
    Faults,
    RateCard,
    SimConfig,
    SimServer,
    State,
    Token,
)

__all__ = ["Simulator", "SimConfig", "RateCard", "Faults", "FAIL_MARKER", "REJECT_MARKER"]


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
            assert self._thread is not None, "start() sets the server and its thread together"
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
        return self._running().base_url

    @property
    def log(self) -> list[dict]:
        state = self._state()
        with state.lock:
            return [dict(e) for e in state.log]

    def count(self, kind: str) -> int:
        """Accepted (billed) submits for "submit"; requests of that kind otherwise."""
        return self._running().stats().get(kind, 0)

    def accepted_bodies(self) -> list[dict]:
        """The body of every task created (every billed submit), oldest first."""
        state = self._state()
        with state.lock:
            return [t.body for t in state.tasks.values()]

    def set_faults(self, faults: Faults) -> None:
        self._state().set_faults(faults)

    # -- money ---------------------------------------------------------------------------
    def charges(self) -> list[dict]:
        """Every accepted submit's charge, oldest first: task_id, token_id (never the key),
        credits, and what it was billed as (e.g. "1080P 10s Sound")."""
        return [
            {"task_id": e["task_id"], "token_id": e["token_id"], "credits": e["charge"], "billed_as": e["billed_as"]}
            for e in self.log
            if e.get("accepted")
        ]

    def balance(self, key: str) -> dict:
        """The key's balance, as the `data` of GET /v1/balance (also for an expired key, which
        that endpoint refuses). KeyError for a key the simulator does not know; in any-key mode a
        new key opens its account, as a request would."""
        return self._state().token_balance(self._token(key))

    def account_balance(self, key: str) -> dict:
        """The `data` GET /v1/user/balance would answer for this key's account."""
        return self._state().account_balance(self._token(key))

    def set_credits(self, key: str, credits: float | None) -> None:
        """Set a key's remaining credits (None: unlimited), e.g. to meet a 402 in a test or a lesson."""
        token = self._token(key)
        with self._state().lock:
            token.quota = None if credits is None else round(credits * QUOTA_PER_CREDIT)

    def _running(self) -> SimServer:
        """The server; it exists from start() until stop()."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return self._server

    def _state(self) -> State:
        return self._running().state

    def _token(self, key: str) -> Token:
        token = self._state().token_for(key)
        if token is None:
            raise KeyError("the simulator does not know this key")
        return token
