"""The README's examples are tests: every `$ ` block runs and prints what it shows.

How the comparison works, and how to regenerate the shown outputs, is in
tests/readme_examples.py and the README's Development section. With MEMSIM_README_UPDATE=1
the README is rewritten in place (keeping `...` elisions) instead of failing.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import readme_examples as rx  # noqa: E402


@pytest.fixture(scope="module")
def results() -> tuple[list[rx.Outcome], list[tuple[int, str, str]], list[str]]:
    lines = rx.README.read_text().splitlines()
    outcomes, checks = rx.run_all(lines)
    if os.environ.get("MEMSIM_README_UPDATE") == "1":
        blocks, _ = rx.parse(lines)
        rx.README.write_text("\n".join(rx.rewrite(lines, outcomes, checks, blocks)) + "\n")
    return outcomes, checks, lines


def test_every_shell_example_prints_what_it_shows(results) -> None:
    outcomes, _, _ = results
    assert len(outcomes) >= 20  # the parser found the README's examples
    problems = []
    for o in outcomes:
        if not o.ok:
            diff = "\n".join(difflib.unified_diff(o.step.shown, o.new_shown, "shown", "printed",
                                                  lineterm=""))
            problems.append(f"README.md:{o.step.line}: $ {o.step.command}\n{diff}")
    assert not problems, "\n\n".join(problems) + (
        "\n\nregenerate with: python tests/readme_examples.py --update")


def test_python_api_examples_print_their_comments(results) -> None:
    _, checks, _ = results
    assert len(checks) >= 3
    wrong = [f"README.md:{line}: expected {exp!r}, printed {got!r}"
             for line, exp, got in checks if exp != got]
    assert not wrong, "\n".join(wrong)


# ------------------------------------------------------------------ the harness itself
def test_matching_elides_masks_and_can_fail() -> None:
    shown = ["a", "...", "solver: highs, optimal, 19 ms", "wide table..."]
    assert rx._match(shown, ["a", "x", "y", "solver: highs, optimal, 2.5 s", "wide table row"],
                     False)
    assert rx._match(shown, ["a", "solver: highs, optimal, 1 ms", "wide table"], False)
    assert not rx._match(shown, ["a", "solver: highs, time_limit, 1 ms", "wide table"], False)
    assert not rx._match(shown, ["a", "solver: highs, optimal, 1 ms", "wide table", "more"],
                         False)
    assert not rx._match(["mean 1.2 ms"], ["mean 1.3 ms"], False)  # a model's figure is exact
    assert rx._match(["ram    400   19.41 us  0.00"], ["ram  400  7 ms  0.12"], True)
    assert not rx._match(["ram    400   19.41 us"], ["ram  401  7 ms"], True)  # counts are


def test_update_rewrites_outputs_and_keeps_elisions() -> None:
    shown = ["head", "...", "expected fetch time: 9.182 ms", "greedy: 45 ms", "..."]
    printed = ["head", "rows", "expected fetch time: 45.02 ms", "new line", "greedy: 45 ms",
               "tail"]
    cost, new = rx._align(shown, printed, False)
    assert cost > 0
    assert new == ["head", "...", "expected fetch time: 45.02 ms", "new line", "greedy: 45 ms",
                   "..."]
    assert rx._match(new, printed, False)
    # a volatile figure that still matches after masking is kept as shown (no churn)
    assert rx._align(["solver: highs, optimal, 19 ms"], ["solver: highs, optimal, 3 ms"],
                     False) == (0, ["solver: highs, optimal, 19 ms"])


def test_parse_reads_heredocs_indented_blocks_and_exit_codes(tmp_path) -> None:
    readme = ["text", "- item:", "  ```", "  $ memsim bank list", "  ...", "  ```",
              "```", "$ cat > f.yaml << 'EOF'", "a: 1", "EOF",
              "$ cat f.yaml; echo \"exit $?\"", "a: 1", "exit 0", "```"]
    blocks, _ = rx.parse(readme)
    assert [s.command for b in blocks for s in b.steps] == [
        "memsim bank list", "cat > f.yaml << 'EOF'", "cat f.yaml; echo \"exit $?\""]
    assert blocks[0].indent == "  " and blocks[0].steps[0].shown == ["..."]
    assert blocks[1].steps[0].heredoc == ["a: 1"] and blocks[1].steps[0].shown == []
    runner = rx.Runner(tmp_path)
    outcomes = [runner.run(s) for s in blocks[1].steps]
    assert all(o.ok for o in outcomes) and (tmp_path / "f.yaml").read_text() == "a: 1\n"
    new = rx.rewrite(readme, [rx.Outcome(blocks[0].steps[0], ["x"], ["x", "..."], False)], [],
                     blocks)
    assert new[4:6] == ["  x", "  ..."] and new[6] == "  ```"
