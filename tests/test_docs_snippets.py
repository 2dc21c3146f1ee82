"""Every snippet in README.md and docs/ runs, as a reader would paste it.

The ```python blocks of one page run in order in one fresh namespace (a later block may use what
an earlier one defined), with the working directory a temporary folder. A block whose first line
is ``# Not run by the tests: <reason>`` is skipped: the reader sees why. Every line of a ```bash
block that starts with ``keras-tlft`` runs in a subprocess and must exit 0 (a bash block marked
the same way is skipped). Both run offline: a proxy that refuses every connection is set, so a
snippet that would download something fails here instead of on a reader's firewalled machine.
A failure names the page and the line of the block in it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_RUN = "# Not run by the tests:"
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
# Pages whose snippets take more than 20 s (measured at load average 10 on 2 cores, where every
# page took more than 15 s; these 40 s to 5 min): CI runs them with `-m heavy`.
HEAVY = {"README.md", "docs/backbones.md", "docs/cli.md", "docs/early-stopping.md",
         "docs/index.md", "docs/lr-finder.md"}
# Any download attempt fails at once: the snippets must run offline.
OFFLINE = {name: "http://127.0.0.1:9" for name in
           ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fenced_blocks(path: Path) -> list[tuple[str, int, str]]:
    """``(language, line of the block's first code line, code)`` for each fenced block."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language, start = opening.group(1), opening.group(2), i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line
                         for line in lines[start:i])
        blocks.append((language, start + 1, code))
        i += 1
    return blocks


def cli_commands(first: int, code: str) -> list[tuple[int, str]]:
    """Each ``keras-tlft ...`` line of a bash block, continuation lines joined."""
    commands, lines, i = [], code.splitlines(), 0
    while i < len(lines):
        line_no, command = first + i, lines[i]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        if command.strip().startswith("keras-tlft"):
            commands.append((line_no, command.strip()))
        i += 1
    return commands


def snippets(path: Path) -> list[tuple[str, int, str]]:
    """What the test runs on a page, in the page's order: ``("python", line, code)`` per block
    and ``("cli", line, command)`` per ``keras-tlft`` line."""
    steps = []
    for language, line, code in fenced_blocks(path):
        if code.lstrip().startswith(NOT_RUN):
            continue
        if language == "python":
            steps.append(("python", line, code))
        elif language == "bash":
            steps.extend(("cli", n, command) for n, command in cli_commands(line, code))
    return steps


def page_params():
    params = []
    for path in pages():
        if snippets(path):
            name = path.relative_to(ROOT).as_posix()
            marks = [pytest.mark.heavy] if name in HEAVY else []
            params.append(pytest.param(path, id=name, marks=marks))
    return params


def place_fashion_mnist():
    """Debian's Fashion-MNIST in Keras's cache folder (benchmark 1's logic)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from transfer_fashion_mnist import place_fashion_mnist as place
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    place()


def run_python(name: str, path: Path, line: int, code: str, namespace: dict) -> None:
    try:
        # Blank lines first, so that a traceback's line numbers are the page's own.
        exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
    except Exception as error:
        raise AssertionError(f"{name}, the python block at line {line} failed: "
                             f"{type(error).__name__}: {error}") from error


def run_cli(name: str, line: int, command: str, cwd: Path) -> None:
    env = {**os.environ, **OFFLINE, "COLUMNS": "100"}
    args = shlex.split(command, comments=True)
    result = subprocess.run([sys.executable, "-m", "keras_tlft", *args[1:]], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{name}, line {line}: `{command}` exited {result.returncode}:\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


@pytest.mark.parametrize("path", page_params())
def test_every_snippet_of_the_page_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for variable, value in OFFLINE.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    steps = snippets(path)
    if any("fashion_mnist" in code for _, _, code in steps):
        place_fashion_mnist()
    name, namespace = path.relative_to(ROOT).as_posix(), {"__name__": "__main__"}
    for kind, line, code in steps:
        if kind == "python":
            run_python(name, path, line, code, namespace)
        else:
            run_cli(name, line, code, tmp_path)


def test_the_snippet_finder_reads_blocks_markers_and_continuations(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n\n- item\n  ```python\n  y = x\n  ```\n"
                    "```python\n# Not run by the tests: needs a GPU\nz\n```\n"
                    "```bash\nkeras-tlft list   # all\npip install x\nkeras-tlft inspect \\\n"
                    "    vgg16\n```\n", encoding="utf-8")
    assert snippets(page) == [("python", 3, "x = 1"), ("python", 8, "y = x"),
                              ("cli", 15, "keras-tlft list   # all"),
                              ("cli", 17, "keras-tlft inspect  vgg16")]


def test_a_failing_snippet_names_its_page_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```python\nx = 1\ny = undefined_name\n```\n", encoding="utf-8")
    [(kind, line, code)] = snippets(page)
    with pytest.raises(AssertionError, match=r"page.md, the python block at line 4 failed: "
                                             r"NameError") as info:
        run_python("page.md", page, line, code, {})
    # The traceback points at the page's own line 5.
    assert info.value.__cause__.__traceback__.tb_next.tb_lineno == 5
    with pytest.raises(AssertionError, match=r"page.md, line 9: `keras-tlft nosuch` exited 2"):
        run_cli("page.md", 9, "keras-tlft nosuch", tmp_path)
