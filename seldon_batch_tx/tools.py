"""``seldon-batch``: tools around batch outputs (``verify``, ``merge``, ``export``).

Kept apart from ``seldon-batch-processor`` so that command keeps the seed's interface.
Each subcommand lives in its own module and registers here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

Command = Callable[[Sequence[str]], int]


def _commands() -> dict[str, tuple[str, Command]]:
    commands: dict[str, tuple[str, Command]] = {}
    try:
        from .outputs.verify import main as verify_main

        def verify_command(argv: Sequence[str]) -> int:
            from .tables.formats import table_rows  # a table input is counted in rows, as the run reads it

            return verify_main(argv, table_rows)

        commands["verify"] = ("report missing, duplicated and failed lines of an output", verify_command)
    except ImportError:
        pass
    try:
        from .outputs.merge import main as merge_main

        commands["merge"] = ("combine shard outputs into one file in batch_index order", merge_main)
    except ImportError:
        pass
    try:
        from .tables.export import main as export_main

        commands["export"] = ("a scored table (Parquet, CSV) from an output joined with its input", export_main)
    except ImportError:
        pass
    return commands


def main(argv: Sequence[str] | None = None) -> None:
    """Help (``-h/--help``) and ``--version`` on stdout with status 0, as ``| less`` expects; an unknown
    or missing command prints the same help on stderr with the usage status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if args and args[0] == "--version":
        from .flags import versions

        print(versions(), flush=True)
        raise SystemExit(0)
    if not args or args[0] in ("-h", "--help") or args[0] not in commands:
        asked = bool(args) and args[0] in ("-h", "--help")
        out = sys.stdout if asked else sys.stderr
        if args and not asked:
            print(f"seldon-batch: error: unknown command {args[0]!r}", file=out)
        print("Usage: seldon-batch COMMAND [ARGS]\n       seldon-batch --version\n\nCommands:", file=out)
        for name, (doc, _) in sorted(commands.items()):
            print(f"  {name:8} {doc}", file=out)
        raise SystemExit(0 if asked else 2)
    raise SystemExit(commands[args[0]][1](args[1:]))
