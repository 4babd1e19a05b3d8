"""The snippets the docs mark runnable run, and README's relative links resolve.

A fenced block is runnable when the last non-blank line before its opening fence is exactly
`<!-- run -->`. A page's runnable `python` blocks run in order in one fresh interpreter (this
one, `sys.executable`), its `bash` blocks in order under `bash -euo pipefail` with this
interpreter's bin directory first on PATH; each in a fresh directory holding a copy of
examples/. Pages are collected when the tests are, so a new page is picked up.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- run -->"
LANGUAGES = ("python", "bash")
TIMEOUT_S = 600
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")

# Runs a page's python blocks in one namespace. Each block is compiled under the page's name
# with its own line numbers, so a traceback points into the page; the marker line on stderr
# tells which block was running when the process died.
_DRIVER = """
import json, sys
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for block in blocks:
    print(f"### snippet at line {block['line']}", file=sys.stderr, flush=True)
    code = "\\n" * (block["line"] - 1) + block["code"]
    exec(compile(code, block["page"], "exec"), namespace)
"""


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int  # the page's line (1-based) of the block's first line of code
    language: str
    code: str


def _closing(lines: list[str], start: int, fence: str) -> int:
    """Index of the line that closes the fence opened just before `start` (or len(lines))."""
    for j in range(start, len(lines)):
        stripped = lines[j].strip()
        if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            return j
    return len(lines)


def collect(text: str, page: str) -> list[Snippet]:
    """The marked blocks of a markdown page, in order, whatever their language."""
    lines = text.splitlines()
    found: list[Snippet] = []
    previous = ""  # the last non-blank line seen outside a block
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            previous = lines[i].strip() or previous
            i += 1
            continue
        indent, fence, info = opening.groups()
        end = _closing(lines, i + 1, fence)
        if previous == MARK:
            body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
            found.append(Snippet(page, i + 2, info, "\n".join(body) + "\n"))
        previous = lines[end].strip() if end < len(lines) else ""
        i = end + 1
    return found


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def _all_snippets() -> list[Snippet]:
    out: list[Snippet] = []
    for path in _pages():
        if path.is_file():
            out += collect(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return out


def _cases() -> list[tuple[str, str]]:
    found = {(s.page, s.language) for s in _all_snippets() if s.language in LANGUAGES}
    return sorted(found)


def _fresh_dir(tmp: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp / "examples")
    return tmp


def run_page(snippets: list[Snippet], tmp: Path) -> str | None:
    """Run one page's blocks of one language in `tmp`; None if they pass, else the report."""
    language = snippets[0].language
    work = _fresh_dir(tmp)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if language == "python":
        blocks = work / ".snippets.json"
        blocks.write_text(json.dumps([s.__dict__ for s in snippets]), encoding="utf-8")
        command = [sys.executable, "-c", _DRIVER, str(blocks)]
    else:
        script = "".join(f"echo '### snippet at line {s.line}' >&2\n{s.code}" for s in snippets)
        (work / ".snippets.sh").write_text(script, encoding="utf-8")
        command = ["bash", "-euo", "pipefail", str(work / ".snippets.sh")]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        code, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as err:
        code, stderr = -1, f"timed out after {TIMEOUT_S} s\n{err.stderr or ''}"
    if code == 0:
        return None
    return _report(snippets, stderr, code, time.perf_counter() - started)


def _report(snippets: list[Snippet], stderr: str, code: int, seconds: float) -> str:
    lines = re.findall(r"^### snippet at line (\d+)$", stderr, flags=re.M)
    failed = next((s for s in snippets if lines and s.line == int(lines[-1])), snippets[0])
    return (
        f"{failed.page}: the {failed.language} snippet at line {failed.line} failed "
        f"(exit {code}; the page's {failed.language} snippets ran {seconds:.1f} s):\n"
        f"{failed.code}\n--- stderr (tail) ---\n{stderr[-3000:]}"
    )


@pytest.mark.parametrize(
    ("page", "language"), _cases(), ids=[f"{p}-{lang}" for p, lang in _cases()]
)
def test_snippets_run(page: str, language: str, tmp_path: Path) -> None:
    snippets = [s for s in _all_snippets() if s.page == page and s.language == language]
    report = run_page(snippets, tmp_path)
    assert report is None, report


def test_the_docs_have_runnable_snippets() -> None:
    snippets = _all_snippets()
    assert snippets, f"no block in README.md or docs/ is marked {MARK}"
    odd = [f"{s.page}:{s.line} ({s.language!r})" for s in snippets if s.language not in LANGUAGES]
    assert not odd, f"marked blocks in a language the tests do not run: {odd}"


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", flags=re.M)
_HTML = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")


def relative_links(text: str) -> list[str]:
    """The link targets of a markdown page that point into the repository."""
    prose = re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\s*\2", "", text, flags=re.M | re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    targets = _LINK.findall(prose) + _REFERENCE.findall(prose) + _HTML.findall(prose)
    out = []
    for target in targets:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the page itself
        out.append(re.split(r"[#?]", target)[0])
    return out


def test_readme_links_resolve() -> None:
    links = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    missing = [link for link in links if not (ROOT / link).resolve().is_relative_to(ROOT)]
    missing += [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to what the repository does not hold: {missing}"


PAGE = """# A page

<!-- run -->
```python
x = 20
```

Prose between.

<!-- run -->

```python title="the second"
print(x + 22)
```

```bash
echo not marked
```

<!-- run -->
Prose after the marker, so the block is not marked.
```bash
echo not marked either
```

<!-- run -->
````bash
ls examples/jsc_tiny_lab3.toml
echo '```'
````
"""


def test_collect_takes_marked_blocks_only() -> None:
    snippets = collect(PAGE, "page.md")
    assert [(s.line, s.language) for s in snippets] == [(5, "python"), (13, "python"), (28, "bash")]
    assert snippets[1].code == "print(x + 22)\n"
    assert snippets[2].code == "ls examples/jsc_tiny_lab3.toml\necho '```'\n"
    assert relative_links("[a](docs/x.md#top) ![b](http://e.org) `[c](no.md)` [d](#here)") == [
        "docs/x.md"
    ]


def test_run_page_shares_state_and_reports_the_failing_block(tmp_path: Path) -> None:
    snippets = collect(PAGE, "page.md")
    assert run_page(snippets[:2], tmp_path / "python") is None
    assert run_page(snippets[2:], tmp_path / "bash") is None
    broken = [*snippets[:1], Snippet("page.md", 40, "python", "\nassert x == 21, 'x is 20'\n")]
    report = run_page(broken, tmp_path / "broken")
    assert report is not None
    assert "page.md: the python snippet at line 40 failed" in report
    assert 'File "page.md", line 41' in report and "x is 20" in report
    installed = "command -v bitscout | grep -qx " + str(Path(sys.executable).parent / "bitscout")
    assert run_page([Snippet("p.md", 1, "bash", installed + "\n")], tmp_path / "path") is None
