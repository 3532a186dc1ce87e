"""`python -m kling_nb.sim [--port N] [--key K] [--queue-s X] [--run-s Y] [--credits C]`: run the
simulator in the foreground (Ctrl-C stops it); point TOAPIS_BASE_URL at the URL it prints.
`--credits` gives every account it opens a balance (default unlimited); `--rate-std`,
`--rate-pro`, `--rate-sound` and `--rate-video` set the price in credits per second."""

from __future__ import annotations

import argparse
import time

from . import Faults, RateCard, SimConfig, Simulator


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m kling_nb.sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument(
        "--key", default=None, help="accept only this key and the keys made with it (default: any non-empty key)"
    )
    p.add_argument("--queue-s", type=float, default=1.0)
    p.add_argument("--run-s", type=float, default=4.0)
    p.add_argument("--lifetime-s", type=float, default=24 * 3600, help="how long result URLs work")
    p.add_argument("--padding-bytes", type=int, default=0, help="pad result videos to about this size")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-seed", type=int, default=None)
    p.add_argument(
        "--credits",
        type=float,
        default=None,
        help="starting credits of every account the simulator opens (default: unlimited)",
    )
    card = RateCard()
    p.add_argument("--rate-std", type=float, default=card.std, help="credits per second at 720P")
    p.add_argument("--rate-pro", type=float, default=card.pro, help="credits per second at 1080P")
    p.add_argument("--rate-sound", type=float, default=card.sound, help="extra credits per second with audio")
    p.add_argument("--rate-video", type=float, default=card.video, help="extra credits per second with a video_list")
    args = p.parse_args(argv)
    config = SimConfig(
        queue_s=args.queue_s,
        run_s=args.run_s,
        result_lifetime_s=args.lifetime_s,
        result_padding_bytes=args.padding_bytes,
        starting_credits=args.credits,
        rates=RateCard(std=args.rate_std, pro=args.rate_pro, sound=args.rate_sound, video=args.rate_video),
    )
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
