"""The documentation stays true: README.md and docs/ point only at what exists.

- links: every relative link `[text](path#anchor)` (and `[label]: path`) resolves to a file or
  directory of the repository, and its #anchor, when there is one, to a heading of that
  Markdown file (GitHub's anchors: lower case, punctuation dropped, spaces as '-', '-1' for
  the second heading of a name) or to an HTML `id`/`name`;
- `invoke TASK --flag ...` in code (inline spans and fenced blocks, also after `.venv/bin/`,
  `sudo` or inside a diagram's label): TASK is a task or alias of `invoke --list` (the
  collection of `desbordante_ops.tasks.namespace`), and every `--flag` / `-f` after it, up to a
  `&&`, `|` or `;`, is one of that task's arguments (the dashed names of its parameters, what
  `invoke TASK --help` lists). An all-capitals word (`invoke --help TASK`) is a placeholder;
- `nox -s NAME ...` / `nox -t TAG` (also `python3 -m nox`): NAME is a session of noxfile.py
  (its `@nox.session` functions, read with `ast`) and TAG one of their tags;
- the README stays short (at most 160 lines, its two Quickstart commands within the first 60)
  and its task table names every task of `invoke --list`.
The checker is tested on bad snippets too, so a wrong example fails.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from invoke import Collection, Task

from desbordante_ops.tasks import namespace

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
README_MAX_LINES = 160
QUICKSTART_WITHIN = 60

FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
CODE_SPAN = re.compile(r"(?<!`)(?P<ticks>`+)(?!`)(?P<code>.+?)(?<!`)(?P=ticks)(?!`)", re.S)
LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text], one level of nested brackets
    r"\(\s*<?(?P<target>[^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"  # (target "title")
)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s.*)?$", re.M)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(?P<text>.*?)\s*#*\s*$")
HTML_ID = re.compile(r"<[a-z]+[^>]*\s(?:id|name)=\"(?P<id>[^\"]+)\"", re.I)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
SEPARATORS = {"&&", "||", "|", ";", ">", ">>", "<", "&", "2>&1", "-->", "->", "→"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$")
# Invoke's own options before a task name that the docs may show.
INVOKE_LISTS = {"--list", "-l", "--version", "-V"}
INVOKE_HELP = {"--help", "-h"}
NOX_SESSIONS = {"-s", "-e", "--session", "--sessions"}
NOX_TAGS = {"-t", "--tags"}


@dataclass(frozen=True)
class Code:
    """A piece of code in a page: an inline span or a fenced block (INFO: its language)."""

    text: str
    line: int
    info: str = ""


@dataclass(frozen=True)
class Page:
    """A Markdown file split into prose (code blanked out, offsets kept) and code; TEXT is the
    prose with only the fenced blocks blanked (headings keep their code spans)."""

    path: Path
    prose: str
    code: list[Code]
    text: str = ""

    def line_of(self, offset: int) -> int:
        return self.prose.count("\n", 0, offset) + 1


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def read_page(path: Path) -> Page:
    """PATH's prose and code: fenced blocks and inline spans taken out of the prose."""
    lines = path.read_text(encoding="utf-8").split("\n")
    prose: list[str] = []
    code: list[Code] = []
    fence = ""
    body: list[str] = []
    start, info = 0, ""
    for number, line in enumerate(lines, 1):
        found = FENCE.match(line)
        if not fence and found:
            fence, info, start, body = found["fence"], found["info"].strip(), number, []
            prose.append("")
        elif fence and found and found["fence"].startswith(fence) and not found["info"].strip():
            code.append(Code("\n".join(body), start + 1, info))
            fence = ""
            prose.append("")
        elif fence:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    text = "\n".join(prose)
    page = Page(path, text, code)
    for span in CODE_SPAN.finditer(text):
        code.append(Code(span["code"].replace("\n", " "), page.line_of(span.start())))
    masked = CODE_SPAN.sub(lambda m: _blank(m.group(0)), text)
    return Page(path, masked, code, text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every #anchor of the Markdown file PATH: its headings' slugs and HTML ids."""
    page = read_page(path)
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in page.text.split("\n"):
        heading = HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading["text"])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found |= {m["id"] for m in HTML_ID.finditer(path.read_text(encoding="utf-8"))}
    return found


def link_problems(page: Page, root: Path) -> list[str]:
    """Relative links of PAGE that do not resolve (inside ROOT)."""
    problems = []
    targets = [(m["target"], m.start()) for m in LINK.finditer(page.prose)]
    targets += [(m["target"], m.start()) for m in REFERENCE.finditer(page.prose)]
    for target, offset in targets:
        if not target or SCHEME.match(target):
            continue
        where = f"{page.path}:{page.line_of(offset)}: link {target!r}"
        path_part, _, anchor = target.partition("#")
        resolved = (page.path.parent / path_part).resolve() if path_part else page.path
        if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            problems.append(f"{where}: no such file")
            continue
        if not anchor:
            continue
        if resolved.suffix != ".md" or resolved.is_dir():
            problems.append(f"{where}: an anchor into something that is not a Markdown file")
        elif anchor not in anchors(resolved):
            problems.append(f"{where}: no heading with the anchor #{anchor} in {resolved.name}")
    return problems


def _clean(word: str) -> str:
    return word.strip("[](){}\"'`,.:*")


@dataclass(frozen=True)
class Command:
    """`invoke ...` or `nox ...` as written in code: the TOOL and the WORDS after it."""

    tool: str
    words: tuple[str, ...]
    where: str

    def __str__(self) -> str:
        return " ".join((self.tool, *self.words))


def commands(page: Page) -> Iterator[Command]:
    """The invoke and nox command lines in PAGE's code, up to a shell separator."""
    for piece in page.code:
        if piece.info.split()[:1] in (["python"], ["py"]):
            continue
        text = re.sub(r"\\\n", " ", piece.text)
        for offset, line in enumerate(text.split("\n")):
            tokens = line.split()
            i = 0
            while i < len(tokens):
                # `.venv/bin/invoke`, `["invoke` (a diagram's label), `(nox`
                tool = _clean(re.split(r"[/\"'\[(]", tokens[i])[-1])
                if tool not in ("invoke", "nox"):
                    i += 1
                    continue
                j = i + 1
                while j < len(tokens) and tokens[j] not in SEPARATORS:
                    j += 1
                where = f"{page.path}:{piece.line + offset}"
                yield Command(tool, tuple(tokens[i + 1 : j]), where)
                i = j


def _all_tasks(collection: Collection) -> dict[str, Task]:
    """Every task of `invoke --list` by name, and by alias (`deploy` for deploy.deploy)."""
    found: dict[str, Task] = {}
    for name, aliases in collection.task_names.items():
        task = collection[name]
        found[name] = task
        found.update({alias: task for alias in aliases})
    return found


def _flags(task: Task) -> set[str]:
    """The options `invoke TASK --help` lists for TASK."""
    flags = set(INVOKE_HELP)
    for argument in task.get_arguments():
        for name in argument.names:
            flags.add(f"--{name}" if len(name) > 1 else f"-{name}")
        if argument.kind is bool and argument.default is True:
            flags.add(f"--no-{argument.names[0]}")
    return flags


# A copy: invoke consumes a task's help texts when it builds its arguments.
TASKS = _all_tasks(copy.deepcopy(namespace()))
FLAGS = {name: _flags(task) for name, task in TASKS.items()}
CANONICAL = {name: min(n for n, t in TASKS.items() if t is task) for name, task in TASKS.items()}


def invoke_problems(command: Command) -> list[str]:
    words = [_clean(word) for word in command.words]
    words = [word for word in words if word]
    if not words or words[0] in INVOKE_LISTS:
        return []
    name = words[0]
    if name in INVOKE_HELP:
        if len(words) < 2 or words[1].startswith("-") or PLACEHOLDER.match(words[1]):
            return []
        name = words[1]
        words = words[1:2]
    if PLACEHOLDER.match(name):
        return []
    if name.startswith("-"):
        return [f"{command.where}: `{command}`: {name} is not an option invoke takes here"]
    if name not in TASKS:
        return [f"{command.where}: `{command}`: {name} is not a task of `invoke --list`"]
    problems = []
    for word in words[1:]:
        if word == "--":
            break
        flag = word.split("=", 1)[0]
        if flag.startswith("-") and not re.match(r"^-\d", flag) and flag not in FLAGS[name]:
            problems.append(
                f"{command.where}: `{command}`: {flag} is not an option of `invoke {name}`"
            )
    return problems


def nox_sessions(noxfile: Path) -> dict[str, set[str]]:
    """The sessions of NOXFILE and their tags: its functions decorated with `@nox.session`."""
    sessions: dict[str, set[str]] = {}
    for node in ast.parse(noxfile.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            function = call.func if call is not None else decorator
            if ast.unparse(function) not in ("nox.session", "session"):
                continue
            name, tags = node.name, set[str]()
            for keyword in call.keywords if call is not None else []:
                if keyword.arg == "name":
                    name = ast.literal_eval(keyword.value)
                elif keyword.arg == "tags":
                    tags = set(ast.literal_eval(keyword.value))
            sessions[name] = tags
    return sessions


def default_sessions(noxfile: Path) -> list[str]:
    """`nox.options.sessions` of NOXFILE: what a plain `nox` runs."""
    for node in ast.parse(noxfile.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "nox.options.sessions":
            return [str(name) for name in ast.literal_eval(node.value)]
    return []


SESSIONS = nox_sessions(REPO / "noxfile.py")


def nox_problems(command: Command, sessions: dict[str, set[str]] = SESSIONS) -> list[str]:
    words = [_clean(word) for word in command.words]
    tags = {tag for each in sessions.values() for tag in each}
    problems = []
    i = 0
    while i < len(words):
        word, i = words[i], i + 1
        if word == "--":
            break
        option, _, value = word.partition("=")
        wanted = (
            ("session", sessions)
            if option in NOX_SESSIONS
            else ("tag", tags)
            if option in NOX_TAGS
            else None
        )
        if wanted is None:
            continue
        what, known = wanted
        names = [value] if value else []
        while not value and i < len(words) and words[i] and not words[i].startswith("-"):
            names.append(words[i])
            i += 1
        problems += [
            f"{command.where}: `{command}`: {name} is not a {what} of noxfile.py (`nox -l`)"
            for name in names
            if not PLACEHOLDER.match(name) and name not in known
        ]
    return problems


def command_problems(page: Page) -> list[str]:
    problems = []
    for command in commands(page):
        problems += invoke_problems(command) if command.tool == "invoke" else nox_problems(command)
    return problems


def problems_of(path: Path, root: Path = REPO) -> list[str]:
    page = read_page(path)
    return link_problems(page, root) + command_problems(page)


# --- the documentation -----------------------------------------------------------------------


def test_there_are_pages_to_check() -> None:
    assert README in PAGES and len(PAGES) > 2
    assert "up" in TASKS and "deploy" in TASKS and "unit" in SESSIONS


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_links_tasks_flags_and_sessions_exist(path: Path) -> None:
    problems = problems_of(path)
    assert not problems, "\n".join(problems)


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").split("\n")
    assert len(lines) <= README_MAX_LINES + 1, f"README.md has {len(lines)} lines"
    first = "\n".join(lines[:QUICKSTART_WITHIN])
    assert "## Quickstart" in first
    assert re.search(r"```bash\n[^\n]*invoke up\n```", first), "the run command"
    assert "```bash\nbash .ci/run\n```" in first, "the test command"


def test_the_readme_names_every_task_and_every_default_session() -> None:
    page = read_page(README)
    named = {
        CANONICAL[word]
        for command in commands(page)
        if command.tool == "invoke"
        for word in [_clean(w) for w in command.words][:1]
        if word in TASKS
    }
    missing = sorted(set(CANONICAL.values()) - named)
    assert not missing, f"README.md's task table misses {missing}"
    quickstart = README.read_text(encoding="utf-8").split("## Quickstart", 1)[1]
    quickstart = quickstart.split("\n## ", 1)[0]
    unnamed = [name for name in default_sessions(REPO / "noxfile.py") if name not in quickstart]
    assert not unnamed, f"README's test command does not say it runs {unnamed}"


def test_the_default_sessions_are_sessions() -> None:
    defaults = default_sessions(REPO / "noxfile.py")
    assert defaults and set(defaults) <= set(SESSIONS)


# --- the checker itself ----------------------------------------------------------------------

GOOD = """\
# Top

## What `invoke up` may do, and why?

See [top](#top), [the same](#what-invoke-up-may-do-and-why), [the other](other.md#part-two)
and [a folder](sub/). Outside: [Kamal](https://kamal-deploy.org). `.venv/bin/invoke up
--no-install` `sudo -E invoke k3s.install --dry-run` `invoke deploy --env prod --tag v1.2.3`
`invoke deploy.render --all` `invoke --help TASK` `invoke --list` `nox -s lint unit`
`nox -t quick` `python3 -m nox -s e2e -- --env stage` `invoke backup --verify=a.tar`

```bash
invoke logs --env stage \\
  --service api --follow && invoke status --env stage | tee out.txt
```

```python
from invoke import task  # python is not a command line
```

```mermaid
flowchart LR
  a["invoke verify --env stage"] --> b["nox -s contract"]
```

[ref]: other.md
"""
OTHER = "# Other\n\n## Part two\n\n## Part two\n\nBack [up](good.md#top), [twice](#part-two-1).\n"
BAD = {
    "[gone](missing.md)": "no such file",
    "[gone](other.md#part-three)": "no heading with the anchor #part-three",
    "[up](../../etc/passwd)": "no such file",
    "[bad]: nowhere.md": "no such file",
    "`invoke deplyo --env stage`": "deplyo is not a task",
    "`invoke deploy --envv stage`": "--envv is not an option of `invoke deploy`",
    "`.venv/bin/invoke up --no-instal`": "--no-instal is not an option of `invoke up`",
    "`invoke images`": "images is not a task",
    "`invoke --help deplyo`": "deplyo is not a task",
    "```bash\ninvoke status --env stage && invoke verify --follow\n```": "--follow is not an",
    '```mermaid\nflowchart LR\n  a["invoke releases.recrod"]\n```': "releases.recrod is not",
    "`nox -s unitt`": "unitt is not a session",
    "`python3 -m nox -s lint typcheck`": "typcheck is not a session",
    "`nox -t quik`": "quik is not a tag",
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "good.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "other.md").write_text(OTHER, encoding="utf-8")
    return tmp_path


def test_the_checker_passes_good_examples(site: Path) -> None:
    assert problems_of(site / "good.md", site) == []
    assert problems_of(site / "other.md", site) == []


@pytest.mark.parametrize(("snippet", "expected"), BAD.items(), ids=list(BAD))
def test_the_checker_finds_a_wrong_example(site: Path, snippet: str, expected: str) -> None:
    page = site / "bad.md"
    page.write_text(f"# Bad\n\nSome text.\n\n{snippet}\n", encoding="utf-8")
    problems = problems_of(page, site)
    assert len(problems) == 1 and expected in problems[0], problems
    lines = snippet.split("\n")
    inside = [n for n, text in enumerate(lines) if "invoke" in text or "nox" in text] or [0]
    line = 5 + inside[0]  # the page's line 5 holds the snippet's first line
    assert problems[0].startswith(f"{page}:{line}:"), problems


def test_github_anchors() -> None:
    heading = "What `invoke up` may do to this machine"
    assert slug(heading) == "what-invoke-up-may-do-to-this-machine"
    assert slug("HTTPS, limits and access") == "https-limits-and-access"
    assert slug("Access, the release ledger and prod") == "access-the-release-ledger-and-prod"
    assert slug("Edge (k3s's Traefik)") == "edge-k3ss-traefik"
    assert slug("Prune, and why not ApplySet") == "prune-and-why-not-applyset"
