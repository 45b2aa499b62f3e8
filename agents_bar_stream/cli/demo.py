"""``demo``: the options of the CartPole demo; the demo itself is :mod:`agents_bar_stream.demo`."""

from __future__ import annotations

import argparse
from typing import Any

from agents_bar_stream.cli.common import (
    CREDENTIALS_EPILOG,
    EXIT_FAILURE,
    EXIT_OK,
    CommandError,
    add_server_options,
    formatter,
    positive_int,
    talking_to,
)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``demo`` to the top-level ``subparsers``."""
    demo = subparsers.add_parser(
        "demo", help="watch an agent learn CartPole through the streaming client", formatter_class=formatter,
        description="A DQN agent learns gymnasium's CartPole-v1: act() for every action, the streaming step() "
                    "for every transition, until the average return of the last 20 episodes reaches 195 or "
                    "--episodes run out. Then it checks that the server received every transition and saves a "
                    "learning curve.\n\nWithout --url it starts a local server in a temporary directory (needs "
                    "the 'server' extra). --flaky puts a fault-injecting proxy between client and server (resets, "
                    "lost answers, stalls, and one 10 s outage) and checks that the loop kept its pace and the "
                    "server got every transition exactly once. Exit 0 when the counts match.",
        epilog=CREDENTIALS_EPILOG + "\nCredentials are needed only with --url.")
    add_server_options(demo, "use this server instead of starting a local one")
    demo.add_argument("--episodes", type=positive_int, default=400, help="most episodes to run (default: %(default)s)")
    demo.add_argument("--flaky", action="store_true", help="run over a flaky link, with a 10 s outage mid-run")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the environment, agent and faults (default: %(default)s)")
    demo.add_argument("--plot", default="demo-learning-curve.png", metavar="PATH",
                      help="where to save the learning curve PNG (default: %(default)s)")
    demo.add_argument("--policy", choices=("auto", "remote", "local"), default="auto",
                      help="where act() runs: auto = the server, and the agent's policy here (ONNX Runtime) when "
                           "the server does not answer in time; remote = the server only (random actions when it "
                           "does not answer); local = here only (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from agents_bar_stream.demo import DemoError, run_demo

    # Errors name a server given with --url; a local one the demo starts has a throwaway address.
    with talking_to(args.url):
        try:
            result = run_demo(url=args.url, username=args.username, password=args.password, token=args.token,
                              episodes=args.episodes, flaky=args.flaky, seed=args.seed, plot=args.plot,
                              quiet=args.quiet, policy=args.policy)
        except DemoError as exc:
            raise CommandError(str(exc)) from None
    return EXIT_OK if result.ok else EXIT_FAILURE
