"""How the option table reaches Twisted's ``usage.Options``: rows, flag forms, one-line errors, --version.

:mod:`.options` holds the table itself; this module turns an :class:`Option` into Twisted's
``optParameters``/``optFlags`` rows, accepts the flag spellings the original processor's scripts
use, and makes every bad value ONE line that names the option as the user can type it
(``-g/--gateway-type``), so a typo never prints Twisted's generic "Parameter type enforcement failed".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

import attrs
from twisted.python import usage

from . import __version__
from .checks import FALSE_WORDS, TRUE_WORDS, boolean, choice, column_names, option_error

#: Options whose values are secrets: never shown in an error, a log line or a summary.
SECRET_OPTIONS = frozenset({"call-credentials-token", "dashboard-token", "storage-options", "header"})
#: Options given any number of times (an ``opt_<name>`` method of ProcessorOptions collects them).
REPEATABLE = frozenset({"header"})


@attrs.frozen
class Option:
    """One option: ``coerce`` None means a flag (``--x``/``--no-x``, or ``--x true|false``)."""

    name: str
    short: str | None
    default: Any
    help: str
    coerce: Callable[[str], Any] | None = str
    #: Other environment variables read when ``SELDON_BATCH_*`` is unset (first set wins).
    fallback_env: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "SELDON_BATCH_" + self.field.upper()

    @property
    def secret(self) -> bool:
        return self.name in SECRET_OPTIONS

    @property
    def label(self) -> str:
        """How errors name it: ``-g/--gateway-type`` (both spellings a user may have typed), or ``--timeout``."""
        return f"-{self.short}/--{self.name}" if self.short else f"--{self.name}"

    def parse(self, raw: str, label: str | None = None, origin: str | None = None) -> Any:
        """``raw`` coerced, or the one-line usage error naming the option and the value (never a secret's)."""
        try:
            return boolean(raw) if self.coerce is None else self.coerce(raw)
        except ValueError as e:
            raise option_error(label or self.label, raw, str(e), secret=self.secret, origin=origin) from None


def normalise_flags(argv: Sequence[str], flags: frozenset[str], labels: Mapping[str, str] | None = None) -> list[str]:
    """Accept ``--use-ssl``, ``--use-ssl=true``, ``--use-ssl false`` and ``--no-use-ssl`` alike.

    The original processor only took ``--use-ssl true``; flags are friendlier, and scripts
    written for the original keep working. ``--use-ssl=maybe`` is a usage error.
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":  # everything after is an argument, as for getopt
            out += args[i - 1:]
            break
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        negated = name.startswith("no-") and name[3:] in flags
        if name not in flags and not negated:
            out.append(arg)
            continue
        if negated:
            name = name[3:]
        if not eq and i < len(args) and args[i].lower() in TRUE_WORDS | FALSE_WORDS:
            value, eq = args[i], "="
            i += 1
        try:
            on = boolean(value) if eq else True
        except ValueError as e:
            label = f"--no-{name}" if negated else (labels or {}).get(name, f"--{name}")
            raise option_error(label, value, str(e)) from None
        out.append(f"--{name}" if on != negated else f"--no-{name}")
    return out


def parameter_rows(table: Sequence[Option]) -> list[list[Any]]:
    """Twisted ``optParameters`` rows of the options of ``table`` that take a value.

    A help text that tells its own default (``[default: $JOB_COMPLETION_INDEX...]``) gets no second
    one from Twisted: the row's default is None and :class:`ProcessorOptions` sets the real one.
    """
    return [[o.name, o.short, None if "[default:" in o.help else o.default, o.help, o.coerce] for o in table
            if o.coerce is not None and o.name not in REPEATABLE]


def flag_rows(table: Sequence[Option]) -> list[list[Any]]:
    """Twisted ``optFlags`` rows: each flag and its ``no-`` form."""
    rows: list[list[Any]] = []
    for o in table:
        if o.coerce is None:
            rows.append([o.name, o.short, o.help])
            rows.append(["no-" + o.name, None, f"Turn --{o.name} off"])
    return rows


class Parameter(usage.CoerceParameter):
    """Twisted's handler of an option with a value, with one-line errors naming the option and value.

    Twisted's own says only "Parameter type enforcement failed: ..." and names neither.
    """

    def __init__(self, options: usage.Options, coerce: Callable[[str], Any], label: str) -> None:
        super().__init__(options, coerce)
        self.label = label

    def dispatch(self, parameterName: str, value: str | None) -> None:  # noqa: N803 - Twisted's signature
        label = self.label
        if value is None:
            raise option_error(label, None, "needs a value")
        try:
            coerced = self.coerce(value)
        except ValueError as e:
            raise option_error(label, value, str(e), secret=parameterName in SECRET_OPTIONS) from None
        self.options.opts[parameterName] = coerced
        given = getattr(self.options, "given", None)
        if isinstance(given, set):
            given.add(parameterName)


def versions() -> str:
    """``--version``: this tool's, Twisted's and gRPC's versions (a bug report needs all three)."""

    def installed(name: str, fallback: str = "not installed") -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return fallback

    return (f"seldon-batch-tx {installed('seldon-batch-tx', __version__)}\n"
            f"Twisted {installed('twisted')}\ngrpcio {installed('grpcio')}")


#: The table options (seldon_batch_tx/tables), rows of ``options.OPTIONS`` kept here: that table is full.
TABLES = (
    Option("input-format", None, None, "-i's format if its name does not say it", choice("jsonl", "csv", "parquet")),
    Option("output-format", None, None, "-o's format if its name does not say it", choice("jsonl", "csv", "parquet")),
    Option("columns", None, None, "A table input's feature columns, as a,b,c [default: numeric ones]", column_names),
    Option("keep-columns", None, None, "Input columns a table output repeats, as a,b,c [default: all]", column_names),
)
