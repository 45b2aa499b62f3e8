"""``agents list|create|delete``: the agents of an account on a server."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agents_bar_stream.cli.common import (
    CREDENTIALS_EPILOG,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_server_options,
    formatter,
    make_client,
    positive_int,
    table,
    talking_to,
)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``agents`` and its subcommands to the top-level ``subparsers``."""
    agents = subparsers.add_parser(
        "agents", help="list, create and delete agents on a server", formatter_class=formatter,
        description="List, create and delete the agents of an account on a server.", epilog=CREDENTIALS_EPILOG)
    asub = agents.add_subparsers(dest="agents_command", metavar="SUBCOMMAND", required=True)

    lst = asub.add_parser("list", help="list the account's agents", formatter_class=formatter,
                          description="List the account's agents: name, model, steps received and steps learned.",
                          epilog=CREDENTIALS_EPILOG)
    lst.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    add_server_options(lst)
    lst.set_defaults(handler=cmd_list)

    create = asub.add_parser("create", help="create an agent", formatter_class=formatter,
                             description="Create an agent. Hyperparameters go with --param (repeatable), e.g. "
                                         "--param lr=0.001 --param batch_size=64.",
                             epilog=CREDENTIALS_EPILOG)
    create.add_argument("name", help="agent name: letters, digits, '_', '-', '.'")
    create.add_argument("--model", required=True, help="dqn, rainbow, ppo or ddpg")
    create.add_argument("--obs-size", type=positive_int, required=True, help="length of an observation")
    create.add_argument("--action-size", type=positive_int, required=True,
                        help="number of actions (discrete models) or length of an action (continuous ones)")
    create.add_argument("--description", help="free text shown with the agent")
    create.add_argument("--param", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                        help="a hyperparameter (value read as JSON when it parses: 0.001, true, \"text\")")
    add_server_options(create)
    create.set_defaults(handler=cmd_create)

    delete = asub.add_parser("delete", help="delete an agent and everything it learned", formatter_class=formatter,
                             description="Delete an agent, its step log and its weights. Refused without --yes. "
                                         "Local queues are not touched.",
                             epilog=CREDENTIALS_EPILOG)
    delete.add_argument("name", help="the agent's name")
    delete.add_argument("--yes", action="store_true", help="really delete it")
    add_server_options(delete)
    delete.set_defaults(handler=cmd_delete)


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as ``(key, value)``, the value read as JSON when it parses."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare word is a string
    return key, value


def cmd_list(args: argparse.Namespace) -> int:
    client = make_client(args)
    with talking_to(client.base_url), client:
        agents = client.request("GET", "/agents/").raise_for_status().json()
    if args.json:
        print(json.dumps(agents, indent=2))
        return EXIT_OK
    if not agents:
        print(f"no agents at {client.base_url}")
        return EXIT_OK
    rows = [(a.get("name"), a.get("model"), a.get("steps_received", 0), a.get("steps_learned", 0)) for a in agents]
    print(table(rows, ("NAME", "MODEL", "STEPS_RECEIVED", "STEPS_LEARNED"), right=(2, 3)))
    return EXIT_OK


def cmd_create(args: argparse.Namespace) -> int:
    from agents_bar_stream import agents as published

    client = make_client(args)
    # The create request as is (agents.create, the published module's call): no RemoteAgent, whose
    # queue this command has no use for.
    config = {**dict(args.param), "obs_size": args.obs_size, "action_size": args.action_size}
    payload = {"name": args.name, "model": args.model.lower(), "description": args.description,
               "config": config, "is_active": True}
    with talking_to(client.base_url), client:
        info = published.create(client, payload)
    print(f"created agent {info.get('name', args.name)} ({info.get('model', args.model)}, obs_size {args.obs_size}, "
          f"action_size {args.action_size}) at {client.base_url}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from agents_bar_stream.client import RemoteAgent

    if not args.yes:
        raise CommandError(f"refusing to delete agent {args.name} without --yes", EXIT_USAGE)
    client = make_client(args)
    with talking_to(client.base_url), client:
        deleted = RemoteAgent(client, args.name).remove(agent_name=args.name, quite=False)
    if not deleted:
        raise CommandError(f"no agent named {args.name} at {client.base_url}")
    print(f"deleted agent {args.name} at {client.base_url}")
    return EXIT_OK
