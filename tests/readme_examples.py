"""The README's examples, run and compared with what they show.

Every fenced block of README.md whose lines start with `$ ` is an example. Its commands run in
order, all blocks in one fresh directory, which the README calls /tmp/demo (the harness puts
its own temporary directory wherever /tmp/demo appears: in commands, file contents and
output). Commands understood:

- `$ memsim ARGS` (globs expanded, `> FILE` redirects stdout), optionally followed by
  `; echo "exit $?"`; without it the command must succeed. `memsim cloud-emulator` runs in a
  child process until it says it is serving, then gets Ctrl-C.
- `$ cat FILE`, `$ rm [-r] PATH`, and `$ cat > FILE << 'EOF'` with the file's lines up to `EOF`.

What a command prints (stdout and stderr, as a terminal shows them) is compared with the lines
shown under it. A line `...` stands for any lines, zero or more; a line ending in `...` for
any line that starts with the text before it (wide tables are cut). Volatile figures are masked
in both (MASKS, below); everything else must match exactly. The ```python blocks of the Python API
section run too: a `# text` comment on a print's line, or on the lines right after it, is what
the print must show.

Regenerate the shown outputs, keeping the `...` elisions, with
`python tests/readme_examples.py --update` (or `MEMSIM_README_UPDATE=1 python -m pytest
tests/test_readme.py`).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import glob
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO = "/tmp/demo"  # the README's name for the directory the examples run in
ELISION = "..."

_TIME = r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)? ?(?:ns|us|ms|s|min|h)\b"
_RATE = r"\d[\d,]*(?:\.\d+)? ?[kMGT]?i?B/s\b"
# (why, pattern, replacement), applied to every shown and printed line
MASKS: list[tuple[str, re.Pattern[str], str]] = [
    ("the solver's own run time", re.compile(rf"^(\s*solver: .*), {_TIME}$"), r"\1, <time>"),
    ("wall-clock time of real reads", re.compile(r"^(\s*wall time:) .*$"), r"\1 <time>"),
    ("ports the emulator picks", re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
]
# (why, pattern, replacement), also applied to the output of commands that time real reads:
# their times, rates and the fractions derived from them (utilisation) are this machine's.
REAL_IO_COMMANDS = {"materialize", "replay", "validate", "calibrate", "cloud-emulator",
                    "serve-bench"}
REAL_IO_MASKS: list[tuple[str, re.Pattern[str], str]] = [
    ("rates of real reads", re.compile(_RATE), "<rate>"),
    ("times of real reads", re.compile(_TIME), "<time>"),
    ("fractions of real time", re.compile(r"\b\d+\.\d+\b(?! ?[kMGT]?i?B\b)"), "<x>"),
    ("table widths follow those figures", re.compile(r" {2,}"), " "),
    ("and so do the rules under headers", re.compile(r"-{2,}"), "--"),
]


@dataclass
class Step:
    """One `$ ` command of a block and the output shown under it."""

    command: str
    line: int  # 1-based README line of the `$ ` line
    shown: list[str] = field(default_factory=list)  # output lines, block indent removed
    shown_start: int = 0  # 0-based README index of the first output line
    heredoc: list[str] | None = None  # the file's lines for `cat > FILE << EOF`


@dataclass
class Block:
    """A fenced block of shell examples."""

    line: int  # 1-based README line of the opening fence
    indent: str
    steps: list[Step]


@dataclass
class PyBlock:
    """A ```python block of the Python API section."""

    line: int  # 1-based README line of the first code line
    indent: str
    code: list[str]


@dataclass
class Outcome:
    """What running a step printed, and whether it matched."""

    step: Step
    printed: list[str]
    new_shown: list[str]  # the shown lines as --update would write them
    real_io: bool

    @property
    def ok(self) -> bool:
        return self.new_shown == self.step.shown and _match(self.step.shown, self.printed,
                                                            self.real_io)


# ------------------------------------------------------------------ reading the README
def _fences(lines: list[str]) -> Iterator[tuple[int, int, str, str]]:
    """(first content index, end index, indent, info string) of every fenced block."""
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, info = m.group(1), m.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        yield i + 1, j, indent, info
        i = j + 1


def _dedent(line: str, indent: str) -> str:
    return line[len(indent):] if line.startswith(indent) else line.lstrip()


def parse(lines: list[str]) -> tuple[list[Block], list[PyBlock]]:
    """The shell example blocks and the Python API blocks of the README's lines."""
    blocks: list[Block] = []
    py: list[PyBlock] = []
    section = ""
    heads = {i: ln for i, ln in enumerate(lines) if ln.startswith("## ")}
    for start, end, indent, info in _fences(lines):
        section = next((heads[i] for i in sorted(heads, reverse=True) if i < start), section)
        body = [_dedent(ln, indent) for ln in lines[start:end]]
        if info == "python" and section.startswith("## Python API"):
            py.append(PyBlock(start + 1, indent, body))
            continue
        if info or not any(ln.startswith("$ ") for ln in body):
            continue
        if not body[0].startswith("$ "):
            raise ValueError(f"README.md:{start + 1}: an example block must start with '$ '")
        steps: list[Step] = []
        k = 0
        while k < len(body):
            step = Step(body[k][2:], start + k + 1)
            k += 1
            here = re.search(r"<<\s*'?(\w+)'?\s*$", step.command)
            if here:
                doc: list[str] = []
                while k < len(body) and body[k] != here.group(1):
                    doc.append(body[k])
                    k += 1
                step.heredoc, k = doc, k + 1
            step.shown_start = start + k
            while k < len(body) and not body[k].startswith("$ "):
                step.shown.append(body[k])
                k += 1
            steps.append(step)
        blocks.append(Block(start, indent, steps))
    return blocks, py


# ------------------------------------------------------------------ comparing
def _mask(line: str, real_io: bool) -> str:
    for _, pattern, repl in MASKS + (REAL_IO_MASKS if real_io else []):
        line = pattern.sub(repl, line)
    return line.rstrip()


def _same(shown: str, printed: str) -> bool:
    """A masked shown line equals a masked printed one, or is its start cut with `...`."""
    if shown.endswith(ELISION) and len(shown) > len(ELISION):
        return printed.startswith(shown[:-len(ELISION)])
    return shown == printed


def _change(shown: str, printed: str, unit: int) -> int:
    """The cost of showing `printed` where `shown` is: 0 if they match, more the less alike."""
    if _same(shown, printed):
        return 0
    ratio = difflib.SequenceMatcher(None, shown, printed).ratio()
    return max(1, round(3 * unit * (1 - ratio)))


def _align(shown: list[str], printed: list[str], real_io: bool) -> tuple[int, list[str]]:
    """Least-cost alignment of the shown lines (with `...` elisions) to the printed ones:
    (cost, the shown lines rewritten to match). A shown line equal after masking is kept as
    shown (so volatile figures do not churn); an elision absorbs any printed lines for free."""
    ms = [_mask(s, real_io) for s in shown]
    unit = 100  # a dropped or inserted line; a changed one costs less the more alike it is
    mp = [_mask(p, real_io) for p in printed]
    n, m = len(shown), len(printed)
    inf = 1 << 30
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    move: list[list[str]] = [[""] * (m + 1) for _ in range(n + 1)]
    cost[n][m] = 0
    for i in range(n, -1, -1):
        for j in range(m, -1, -1):
            if i == n and j == m:
                continue
            best, how = inf, ""
            if i < n and shown[i].strip() == ELISION:
                if cost[i + 1][j] < best:
                    best, how = cost[i + 1][j], "end-elision"
                if j < m and cost[i][j + 1] < best:
                    best, how = cost[i][j + 1], "absorb"
            else:
                if i < n and j < m:
                    c = cost[i + 1][j + 1] + _change(ms[i], mp[j], unit)
                    if c < best:
                        best, how = c, "match"
                if i < n and cost[i + 1][j] + 3 * unit // 2 < best:  # keep what is shown
                    best, how = cost[i + 1][j] + 3 * unit // 2, "drop"
                if j < m and cost[i][j + 1] + unit < best:
                    best, how = cost[i][j + 1] + unit, "insert"
            cost[i][j], move[i][j] = best, how
    out: list[str] = []
    i = j = 0
    while (i, j) != (n, m):
        how = move[i][j]
        if how == "end-elision":
            out.append(shown[i])
            i += 1
        elif how == "absorb":
            j += 1
        elif how == "match":
            out.append(shown[i] if _same(ms[i], mp[j]) else printed[j])
            i, j = i + 1, j + 1
        elif how == "drop":
            i += 1
        else:
            out.append(printed[j])
            j += 1
    return cost[0][0], out


def _match(shown: list[str], printed: list[str], real_io: bool) -> bool:
    return _align(shown, printed, real_io)[0] == 0


# ------------------------------------------------------------------ running
class Runner:
    """Runs the steps in one directory; `demo` is what /tmp/demo stands for."""

    def __init__(self, demo: Path) -> None:
        self.demo = demo
        self.env: dict[str, str] = {}
        self.namespace: dict[str, object] = {}

    def _local(self, text: str) -> str:
        return text.replace(DEMO, str(self.demo))

    def _shown(self, text: str) -> str:
        return text.replace(str(self.demo), DEMO)

    def run(self, step: Step) -> Outcome:
        command = self._local(step.command)
        real_io = False
        if step.heredoc is not None:
            target = re.match(r"cat\s*>\s*(\S+)", command)
            if not target:
                raise ValueError(f"README.md:{step.line}: only `cat > FILE << EOF` is known")
            text = "".join(self._local(ln) + "\n" for ln in step.heredoc)
            (self.demo / target.group(1)).write_text(text)
            printed = ""
        else:
            echo = re.search(r';\s*echo "exit \$\?"\s*$', command)
            if echo:
                command = command[:echo.start()]
            words = shlex.split(command)
            if not words:
                raise ValueError(f"README.md:{step.line}: empty command")
            if words[0] == "memsim":
                real_io = len(words) > 1 and words[1] in REAL_IO_COMMANDS
                printed, code = self._memsim(words[1:], step)
            elif words[0] == "cat" and len(words) == 2:
                printed, code = (self.demo / words[1]).read_text(), 0
            elif words[0] == "rm" and len(words) >= 2:
                recursive = words[1] == "-r"
                for w in words[1 + recursive:]:
                    target = self.demo / w
                    if recursive and target.is_dir():
                        shutil.rmtree(target)
                    else:
                        target.unlink()
                printed, code = "", 0
            else:
                raise ValueError(f"README.md:{step.line}: unknown command {words[0]!r}")
            if echo:
                printed += f"exit {code}\n"
            elif code != 0:
                raise AssertionError(f"README.md:{step.line}: `{step.command}` exited {code} "
                                     f"(show `; echo \"exit $?\"` if that is meant):\n{printed}")
        lines = self._shown(printed).splitlines()
        _, new = _align(step.shown, lines, real_io)
        return Outcome(step, lines, new, real_io)

    def _memsim(self, args: list[str], step: Step) -> tuple[str, int]:
        out_file = None
        if ">" in args:
            k = args.index(">")
            out_file, args = args[k + 1], args[:k]
        expanded: list[str] = []
        for a in args:
            hits = sorted(glob.glob(a)) if any(c in a for c in "*?[") else []
            expanded.extend(hits or [a])
        if expanded[:1] == ["cloud-emulator"]:
            return self._serve(expanded)
        from click.testing import CliRunner

        from memsim.cli import main
        from memsim.stores import forget

        forget()  # each command is a process of its own: memory:// stores do not carry over
        runner = CliRunner(env=self.env)
        result = runner.invoke(main, expanded, prog_name="memsim", catch_exceptions=False)
        text = result.output
        if out_file is not None:
            (self.demo / out_file).write_text(result.stdout)
            text = result.stderr
        return text, result.exit_code

    def _serve(self, args: list[str]) -> tuple[str, int]:
        """A command that serves until Ctrl-C: run it, wait until it serves, interrupt it."""
        code = "import sys; from memsim.cli import main; sys.exit(main(prog_name='memsim'))"
        proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=self.demo,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "serving" in line:
                    break
            proc.send_signal(signal.SIGINT)
            rest, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait()
        return "".join(lines) + (rest or ""), proc.returncode

    def run_python(self, block: PyBlock) -> list[tuple[int, str, str]]:
        """Run a Python API block in this directory's namespace; (README line, expected,
        printed) for every print with an expected comment."""
        code = [self._local(ln) for ln in block.code]
        tree = ast.parse("\n".join(code))
        checks: list[tuple[int, str, str]] = []
        for node in tree.body:
            src = "\n".join(code[node.lineno - 1:node.end_lineno])
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(src, f"README.md:{block.line + node.lineno - 1}", "exec"),
                     self.namespace)
            last = code[node.end_lineno - 1]
            expected = None
            is_print = (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                        and getattr(node.value.func, "id", "") == "print")
            if not is_print:
                continue
            m = re.search(r"\)\s+#\s?(.*)$", last)
            if m:
                expected, where = m.group(1), node.end_lineno
            elif node.end_lineno < len(code) and code[node.end_lineno].lstrip().startswith("#"):
                expected = code[node.end_lineno].lstrip()[1:].strip()
                where = node.end_lineno + 1
            if expected is not None:
                checks.append((block.line + where - 1, expected,
                               self._shown(buf.getvalue()).strip()))
        return checks


@contextlib.contextmanager
def demo_dir() -> Iterator[Path]:
    """A fresh directory for the examples, with the repository's device_profiles/ beside
    them (the README globs it), and the emulated cloud the README says to start."""
    from memsim.emulate import LocalS3

    with tempfile.TemporaryDirectory(prefix="memsim-readme-") as tmp:
        demo = Path(tmp)
        (demo / "device_profiles").symlink_to(ROOT / "device_profiles")
        with LocalS3(delay=0.02, bandwidth=100e6) as s3:
            old = os.getcwd()
            os.chdir(demo)
            saved = {k: os.environ.get(k) for k in s3.env()}
            os.environ.update(s3.env())
            try:
                yield demo
            finally:
                os.chdir(old)
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


def run_all(lines: list[str], on_outcome: Callable[[Outcome], None] | None = None
            ) -> tuple[list[Outcome], list[tuple[int, str, str]]]:
    """Run every example of the README's lines, in order."""
    blocks, py = parse(lines)
    outcomes: list[Outcome] = []
    checks: list[tuple[int, str, str]] = []
    with demo_dir() as demo:
        runner = Runner(demo)
        for block in blocks:
            for step in block.steps:
                outcome = runner.run(step)
                outcomes.append(outcome)
                if on_outcome:
                    on_outcome(outcome)
        for pb in py:
            checks.extend(runner.run_python(pb))
    return outcomes, checks


def rewrite(lines: list[str], outcomes: list[Outcome], checks: list[tuple[int, str, str]],
            blocks: list[Block]) -> list[str]:
    """The README's lines with every shown output replaced by its `new_shown`."""
    new = list(lines)
    for line, expected, printed in checks:  # first: these keep the line count
        if expected != printed and "\n" not in printed:
            new[line - 1] = new[line - 1].replace(f"# {expected}", f"# {printed}")
    indent_of = {s.line: b.indent for b in blocks for s in b.steps}
    for o in sorted(outcomes, key=lambda o: o.step.line, reverse=True):
        if o.step.heredoc is not None or o.new_shown == o.step.shown:
            continue
        ind = indent_of[o.step.line]
        a = o.step.shown_start
        new[a:a + len(o.step.shown)] = [(ind + ln).rstrip() for ln in o.new_shown]
    return new


def main(argv: list[str]) -> int:
    """Check the README's examples, or rewrite their outputs with --update."""
    update = "--update" in argv
    lines = README.read_text().splitlines()
    outcomes, checks = run_all(lines)
    bad = [o for o in outcomes if not o.ok]
    bad_py = [c for c in checks if c[1] != c[2]]
    for o in bad:
        print(f"README.md:{o.step.line}: $ {o.step.command}: output differs")
    for line, expected, printed in bad_py:
        print(f"README.md:{line}: expected {expected!r}, printed {printed!r}")
    if update and (bad or bad_py):
        blocks, _ = parse(lines)
        README.write_text("\n".join(rewrite(lines, outcomes, checks, blocks)) + "\n")
        print(f"rewrote {len(bad)} outputs and {len(bad_py)} comments in {README}")
        return 0
    return 1 if bad or bad_py else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
