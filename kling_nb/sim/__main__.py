"""`python -m kling_nb.sim [--port N] [--key K] [--queue-s X] [--run-s Y]`: run the simulator
in the foreground (Ctrl-C stops it); point TOAPIS_BASE_URL at the URL it prints."""

from __future__ import annotations

import argparse
import time

from . import Faults, SimConfig, Simulator


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m kling_nb.sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--key", default=None, help="accept only this key (default: any non-empty key)")
    p.add_argument("--queue-s", type=float, default=1.0)
    p.add_argument("--run-s", type=float, default=4.0)
    p.add_argument("--lifetime-s", type=float, default=24 * 3600, help="how long result URLs work")
    p.add_argument("--padding-bytes", type=int, default=0, help="pad result videos to about this size")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-seed", type=int, default=None)
    args = p.parse_args(argv)
    config = SimConfig(queue_s=args.queue_s, run_s=args.run_s, result_lifetime_s=args.lifetime_s,
                       result_padding_bytes=args.padding_bytes)
    sim = Simulator(args.key, config, host=args.host, port=args.port).start()
    if args.fault_rate:
        sim.set_faults(Faults(rate=args.fault_rate, seed=args.fault_seed))
    print(sim.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
