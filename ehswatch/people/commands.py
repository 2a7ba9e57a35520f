"""`ehswatch users …`: manage the people who sign in, from the plant server's shell.

`add NAME --role ROLE`, `passwd NAME`, `disable NAME`, `enable NAME`, `list`, each with
`--config FILE` (the database is the config's). A password is read from standard input
when that is not a terminal (one line: `printf '%s\\n' "$PW" | ehswatch users add …`),
else asked for twice without echo. Every change is audited as done by ``cli:<login>``.
Exit codes: 0 done, 1 refused (the reason on standard error), 2 a config that must not run.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from datetime import UTC, datetime

from ehswatch.config import ROLES, PlantConfig
from ehswatch.db import Database
from ehswatch.people.directory import People
from ehswatch.roles import Actor, NotFound, Refused


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="manage the people who sign in (workbench)")
    what = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = what.add_parser("add", help="add a person (password from stdin or asked for)")
    add.add_argument("name", help="what they sign in as, e.g. zhang.wei")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--display-name", default="", help="shown on pages, e.g. 张伟")
    for action, text in (
        ("passwd", "set a person's password (their sessions end)"),
        ("disable", "stop a person signing in (their sessions end)"),
        ("enable", "let a disabled person sign in again"),
    ):
        one = what.add_parser(action, help=text)
        one.add_argument("name")
    what.add_parser("list", help="list the people")
    for parser in what.choices.values():
        parser.add_argument("--config", required=True, help="the plant's YAML config")


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _cli_actor() -> Actor:
    try:
        login = getpass.getuser()
    except Exception:  # no login name (a container without one)
        login = str(os.getuid())
    return Actor(name=f"cli:{login}", role="admin")


async def _main(config: PlantConfig, args: argparse.Namespace) -> str:
    async with Database(config.database.url) as db:
        people = People(db=db, machines=frozenset(u.name for u in config.users))
        by = _cli_actor()
        action = args.users_command
        if action == "list":
            rows = await people.list()
            lines = [f"{'name':24} {'role':16} {'state':9} password set"]
            for p in rows:
                when = datetime.fromtimestamp(p.password_set_at, UTC).strftime("%Y-%m-%d %H:%M")
                state = "disabled" if p.disabled else "active"
                shown = f"{p.name} ({p.display_name})" if p.display_name else p.name
                lines.append(f"{shown:24} {p.role:16} {state:9} {when} UTC")
            return "\n".join(lines)
        if action == "add":
            person = await people.add(
                args.name, args.role, _password(), by=by, display_name=args.display_name
            )
            return f"added {person.name} ({person.role})"
        if action == "passwd":
            await people.get(args.name)  # no password asked for a person who does not exist
            await people.set_password(args.name, _password(), by=by)
            return f"password of {args.name} set; their sessions have ended"
        if action == "disable":
            await people.disable(args.name, by=by)
            return f"{args.name} disabled; their sessions have ended"
        if action == "enable":
            await people.enable(args.name, by=by)
            return f"{args.name} enabled"
    raise AssertionError(f"unhandled users action {action}")


def run(config: PlantConfig, args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_main(config, args)))
    except (ValueError, Refused, NotFound) as exc:
        print(f"ehswatch users {args.users_command}: {exc}", file=sys.stderr)
        return 1
    return 0
