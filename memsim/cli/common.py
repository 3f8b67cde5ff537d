"""What every command shares: the error shell, JSON output, option parsing, option stacks."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from memsim.errors import (
    DataError,
    InfeasibleError,
    InputError,
    MemsimError,
    OverloadWarning,
    SolverError,
    StoreError,
    one_line,
)

if TYPE_CHECKING:
    from memsim.bank import Bank
    from memsim.blockmap import Subtree
    from memsim.layout import Layout
    from memsim.profile import Profile

EXIT_CODES = {InputError: 2, InfeasibleError: 3, SolverError: 4, StoreError: 5, DataError: 6}


def scrub(text: str) -> str:
    """What the CLI prints, on one line where it must be, with any URL's userinfo
    (`s3://KEY:SECRET@`) scrubbed: the root defence against echoing a credential."""
    from memsim.stores.url import redact

    return redact(text)


def error(message: str) -> None:
    """Print `message` as one `memsim: error:` line on stderr (scrubbed)."""
    click.echo(f"memsim: error: {one_line(scrub(message))}", err=True)


def fail(message: str, code: int) -> None:
    """Print `message` as the one `memsim: error:` line and exit with `code`."""
    error(message)
    sys.exit(code)


def warn(message: str) -> None:
    """Print `message` as one `memsim: warning:` line on stderr (scrubbed)."""
    click.echo(f"memsim: warning: {one_line(scrub(message))}", err=True)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn memsim errors into one line and an exit code; keep tracebacks for MEMSIM_DEBUG."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():  # commands print their own one-line warnings
                warnings.simplefilter("ignore", OverloadWarning)
                return func(*args, **kwargs)
        except MemsimError as exc:
            fail(str(exc), next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must still not dump a traceback on users
            if os.environ.get("MEMSIM_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} "
                  "(set MEMSIM_DEBUG=1 for the traceback, and please report it)", 70)

    return wrapper


def emit_json(data: Any) -> None:
    """Print `data` as JSON; NaN and infinities (empty statistics) become null, and URL
    userinfo is scrubbed."""
    click.echo(scrub(json.dumps(finite(data), indent=2, allow_nan=False, default=str)))


def finite(data: Any) -> Any:
    """JSON has no NaN: empty statistics become null."""
    if isinstance(data, float):
        return data if data == data and abs(data) != float("inf") else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    return data


def size_option(value: str | None, name: str) -> int | None:
    """A size option's value in bytes; a bad unit names the option."""
    from memsim.units import size_field

    return size_field(value, name)


def levels_option(value: str | None, name: str) -> list[int]:
    if not value:
        return []
    out = []
    for part in value.split(","):
        text = part.strip().upper().removeprefix("L")
        if not text.isdigit() or len(text) > 6 or int(text) < 1:  # 6 digits: beyond any bank
            raise InputError(f"cannot read level {part.strip()[:20]!r} in {value[:40]!r}; "
                             "expected e.g. '2' or '2,3'", field=name)
        out.append(int(text))
    return out


def ref_near(ref: str, base: str | None) -> str:
    """A bank/profile named in a layout file: a path is relative to the layout's folder."""
    if base and ("/" in ref or ref.endswith((".yaml", ".yml"))) and not Path(ref).is_absolute():
        candidate = Path(base).parent / ref
        if candidate.exists():
            return str(candidate)
    return ref


def ref_from(ref: str, out: str) -> str:
    """How a layout written to `out` should name `ref`: a path relative to it, or the name."""
    path = Path(ref)
    if path.is_file():
        return os.path.relpath(path.resolve(), Path(out).resolve().parent)
    return ref


def load_trio(profile_ref: str | None, bank_ref: str | None, layout_ref: str
               ) -> tuple[Profile, Bank, Layout]:
    """The layout, and the profile and bank it names unless given."""
    from memsim.bank import load_bank
    from memsim.layout import load_layout
    from memsim.profile import load_profile

    lay = load_layout(layout_ref)
    profile_ref = profile_ref or (lay.profile and ref_near(lay.profile, lay.file))
    bank_ref = bank_ref or (lay.bank and ref_near(lay.bank, lay.file))
    if not profile_ref:
        raise InputError("no profile given: use --profile, or set 'profile' in the layout",
                         file=lay.file, field="profile")
    if not bank_ref:
        raise InputError("no bank given: use --bank, or set 'bank' in the layout",
                         file=lay.file, field="bank")
    return load_profile(profile_ref), load_bank(bank_ref), lay


def tier_list(value: str | None, p: Profile, name: str) -> list[str]:
    """A comma-separated tier option, each a tier of `p`."""
    return p.check_tiers([t.strip() for t in value.split(",") if t.strip()] if value else [],
                         name)


def subtrees(values: tuple[str, ...], name: str) -> list[Subtree]:
    """LEVEL:BLOCK options as subtrees."""
    from memsim.blockmap import parse_subtrees

    return parse_subtrees(values, name)


def layout_options(layout_help: str = "Layout file or shipped name.",
                   store: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--profile, --bank, --layout (and --store): the inputs of every command that takes a
    layout."""
    options = [
        click.option("--profile", "profile_ref", metavar="PROFILE",
                     help="Device profile file or shipped name [default: the layout's]."),
        click.option("--bank", "bank_ref", metavar="BANK",
                     help="Bank file or preset [default: the layout's]."),
        click.option("--layout", "layout_ref", metavar="LAYOUT", required=True,
                     help=layout_help),
    ]
    if store:
        options.append(click.option(
            "--store", "store", multiple=True, metavar="TIER=URL",
            help="Where a tier's data lives, overriding the profile: file:///dir, "
            "s3://bucket/prefix or memory://name. Repeatable."))

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Machine-readable output (base units).")


class OutputFile(click.Path):
    """A local file a command writes: never a URL (memsim writes outputs atomically on local
    disks; a URL here is a mistake, and echoing it back could show credentials)."""

    name = "output file"

    def __init__(self, *, dir_okay: bool = False) -> None:
        super().__init__(dir_okay=dir_okay)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "://" in value:
            from memsim.errors import scrub_userinfo

            self.fail(f"expected a local file path, not a URL ({scrub_userinfo(value)[:60]!r})",
                      param, ctx)
        return super().convert(value, param, ctx)


def read_run_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--queries, --warmup, --seed, --warm: how a command that reads the bank for real runs
    its queries (`what` is what the warm-up is left out of)."""
    options = [
        click.option("--queries", type=click.IntRange(min=1), default=1000, show_default=True),
        click.option("--warmup", type=click.FloatRange(0, 1, max_open=True), default=0.1,
                     show_default=True, help=f"Fraction of queries left out of {what}."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the queries: the same seed gives the arrivals and paths "
                     "`memsim simulate` draws."),
        click.option("--warm", is_flag=True,
                     help="Allow the page cache (default: cold reads with O_DIRECT)."),
    ]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate
