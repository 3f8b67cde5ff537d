"""The memsim command line: a thin shell over the Python API, one module per command group.

Errors a user can cause end with one line on stderr naming file, line and field (or the
option), and a non-zero exit (2: bad input, 3: infeasible, 4: solver trouble, 5: a store
cannot be used, 6: stored data is missing or corrupt); never a traceback.

`main` loads a command's module only when that command runs, so `memsim --help` does not pay
for numpy, scipy, pydantic or the solvers; the short help it lists comes from `COMMANDS`
(tests/test_startup.py keeps each entry equal to the real command's).
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import click

from memsim.errors import one_line, scrub_userinfo

__all__ = ["COMMANDS", "main"]

# command name -> ("module:attribute" of the click command, its short help for `memsim --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "bank": ("memsim.cli.formats:bank",
             "Memory banks: tree shape, multipliers per level, memory type and anchor."),
    "calibrate": ("memsim.cli.calibrate:calibrate_cmd",
                  "Measure real tiers and write a device profile."),
    "cloud-emulator": ("memsim.cli.emulate:cloud_emulator",
                       "Serve a local S3 endpoint that behaves like a distant cloud store."),
    "estimate": ("memsim.cli.estimate:estimate_cmd",
                 "Fetch time of one query under LAYOUT on an otherwise idle machine."),
    "layout": ("memsim.cli.formats:layout",
               "Layouts: which tier holds each level, and which levels stay resident."),
    "materialize": ("memsim.cli.realio:materialize_cmd",
                    "Write the bank into zarr v3 stores, one per tier, as the layout places it."),
    "optimize": ("memsim.cli.optimize:optimize_cmd",
                 "Choose where every level (or every block) lives to minimise the expected "
                 "fetch time."),
    "profile": ("memsim.cli.formats:profile",
                "Device profiles: the tiers of a storage hierarchy."),
    "replay": ("memsim.cli.realio:replay_cmd",
               "Run a workload against the materialized bank with real reads, timing each "
               "request."),
    "route": ("memsim.cli.route:route_cmd",
              "Route query embeddings down the bank's tree by nearest centroid and write a "
              "trace."),
    "schema": ("memsim.cli.formats:schema",
               "Print the JSON Schema of a YAML format, for editors to complete and check "
               "files."),
    "serve-bench": ("memsim.cli.servebench:serve_bench_cmd",
                    "Serve a workload's queries through the client with concurrent callers, "
                    "timing them."),
    "simulate": ("memsim.cli.simulate:simulate_cmd",
                 "Fetch-time distribution under load: queueing, shared bandwidth, caching."),
    "sweep": ("memsim.cli.sweep:sweep",
              "Run many configurations from one spec, in parallel and resumable; report on "
              "them."),
    "validate": ("memsim.cli.validate:validate_cmd",
                 "Replay a workload with real reads, simulate the same queries, compare."),
    "verify": ("memsim.cli.realio:verify_cmd",
               "Read every stored block back and check it against the manifest."),
    "workload": ("memsim.cli.formats:workload",
                 "Workloads: query arrivals, routing over tree paths, topic locality."),
}


def load_command(name: str) -> click.Command:
    """Import the module of command `name` from `COMMANDS` and return its click command."""
    module, _, attr = COMMANDS[name][0].partition(":")
    command = getattr(importlib.import_module(module), attr)
    if not isinstance(command, click.Command):  # a wrong table entry is a bug, not user input
        raise TypeError(f"{COMMANDS[name][0]} is not a click command")
    return command


class OneLineError(click.ClickException):
    """A click error shown as one line, `memsim: error: <message>`, with its exit code.

    A URL's userinfo in the message (a bad value echoed back) is scrubbed: never a secret.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(one_line(scrub_userinfo(message)))
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"memsim: error: {self.message}", err=True, file=file)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _param_name(param: click.Parameter | None, hint: Any) -> str:
    """`option '--queries'` or `argument 'LAYOUT'`: the parameter an error is about."""
    if isinstance(param, click.Option):
        long = [o for o in param.opts if o.startswith("--")]
        return f"option '{(long or param.opts)[0]}'"
    if isinstance(param, click.Argument):
        return f"argument '{param.human_readable_name}'"
    if hint:
        text = hint if isinstance(hint, str) else " / ".join(hint)
        return f"parameter {text}" if text.startswith(("'", '"')) else f"parameter '{text}'"
    return "parameter"


def _usage(ctx: click.Context | None) -> str:
    if ctx is None:
        return ""
    pieces = ctx.command.collect_usage_pieces(ctx)
    return f" (usage: {' '.join([ctx.command_path, *pieces])})"


def _sentence(text: str) -> str:
    """One line, no trailing period, lower-case first letter (the house style of errors)."""
    text = " ".join(str(text).split()).rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) == 1 else text


def click_message(exc: click.ClickException) -> str:
    """The message of a click error as one line that names the option, argument or command."""
    if isinstance(exc, click.MissingParameter):
        what = _param_name(exc.param, exc.param_hint)
        extra = ""
        if exc.param is not None:
            extra = exc.param.type.get_missing_message(param=exc.param, ctx=exc.ctx) or ""
        detail = f"; {_sentence(extra)}" if extra else ""
        return f"missing {what}{detail}{_usage(exc.ctx)}"
    if isinstance(exc, click.BadParameter):
        return f"{_param_name(exc.param, exc.param_hint)}: {_sentence(exc.message)}"
    if isinstance(exc, click.NoSuchOption):
        message = f"option '{exc.option_name}': no such option"
        if exc.possibilities:
            message += f" (did you mean {_quoted(sorted(exc.possibilities))}?)"
        return message
    if isinstance(exc, click.exceptions.NoSuchCommand):
        # named as typed after the program name: 'profile shwo', did you mean 'profile show'?
        path = exc.ctx.command_path.split()[1:] if exc.ctx is not None else []
        message = f"no such command {_quoted([' '.join([*path, exc.command_name])])}"
        if exc.possibilities:
            close = [" ".join([*path, p]) for p in exc.possibilities]
            message += f" (did you mean {_quoted(close)}?)"
        elif exc.ctx is not None:
            message += f" (see '{exc.ctx.command_path} --help')"
        return message
    if isinstance(exc, click.BadOptionUsage):
        text = re.sub(r"^Option '[^']*' ", "", exc.message)
        return f"option '{exc.option_name}': {_sentence(text)}"
    if isinstance(exc, click.UsageError):
        return f"{_sentence(exc.format_message())}{_usage(exc.ctx)}"
    return _sentence(exc.format_message())


def _reraise_one_line(exc: click.ClickException) -> NoReturn:
    # bad input, whether click's parser or a file click could not open found it
    code = 2 if isinstance(exc, click.UsageError | click.FileError) else exc.exit_code
    error = OneLineError(click_message(exc), code)
    error.__cause__ = exc  # kept for callers that run main(standalone_mode=False)
    error.__suppress_context__ = True
    raise error


def _converting(exc: BaseException) -> click.Parameter | None:
    """The parameter whose value click was converting when `exc` was raised, if any.

    Some of click's types let a non-click error out of their conversion (click.Path stats
    the value: a NUL byte raises ValueError); raised there, it is bad input for that option.
    """
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name in ("process_value", "type_cast_value"):
            owner = frame.f_locals.get("self")
            if isinstance(owner, click.Parameter):
                found = owner
        tb = tb.tb_next
    return found


def _reraise_conversion(exc: Exception) -> None:
    """A ValueError or OverflowError from converting an option's value: a usage error."""
    param = _converting(exc)
    if param is None:
        return  # not from parsing: the caller re-raises it as it is
    bad = click.BadParameter(str(exc) or type(exc).__name__, param=param)
    _reraise_one_line(bad)


class LazyGroup(click.Group):
    """A group whose commands are listed from `COMMANDS` and imported only when one runs.

    Every click usage or parameter error of any command below it (subgroups included) is
    turned into one line here, in one place.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in COMMANDS:
            return load_command(cmd_name)
        return None

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:  # suggest among the lazy commands too
            raise click.exceptions.NoSuchCommand(
                exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands from the table, without importing a single one."""
        names = [n for n in self.list_commands(ctx)
                 if n in COMMANDS or not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.commands:
                text = self.commands[name].get_short_help_str(limit)
            else:
                text = click.utils.make_default_short_help(COMMANDS[name][1], limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        with _one_line_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Click's usage errors, and values click could not convert, as one-line errors."""
    try:
        yield
    except OneLineError:
        raise
    except click.ClickException as exc:
        _reraise_one_line(exc)
    except (ValueError, OverflowError) as exc:
        _reraise_conversion(exc)
        raise


@click.group("memsim", cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="memsim")
def main() -> None:
    """Place a hierarchical memory bank on a storage hierarchy and predict its fetch time.

    Profiles, banks and layouts are YAML files; shipped ones can be named instead of a path
    (see `memsim profile list`, `memsim bank list`, `memsim layout list`).
    """
