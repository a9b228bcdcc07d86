"""The README and the pages under docs/ name only what exists: links resolve, the commands and
their options parse, the settings are settings, the paths are there, and the topics and
headers are the contract's. The README stays a short guide with the page on its first screen,
and each measured figure comes with the command that printed it."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from schemas import wire
from shopvec import cli
from tests.deploy.deploykit import ROOT, setting_names

README = ROOT / "README.md"
DOCS_DIR = ROOT / "docs"
PAGES = [README, *sorted(DOCS_DIR.glob("*.md"))]
COMMAND_PAGES = [README, DOCS_DIR / "benchmarks.md", DOCS_DIR / "architecture.md"]
SETTINGS_SCHEME = "SHOPVEC_SECTION__KEY"
"""How the README writes the naming scheme; not a setting of its own."""


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _code_spans(text: str) -> list[str]:
    """Inline code spans and the lines of fenced blocks."""
    spans: list[str] = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        spans.extend(line for line in block.splitlines() if line.strip())
    outside = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    spans.extend(span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", outside))
    return spans


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _shopvec_commands(text: str) -> list[list[str]]:
    """Each `shopvec ...` command line a page shows (at the start of a line or inline code,
    after settings, or run in the compose `cli` service), as words with the shell's quoting,
    up to a comment, a pipe or the end of the command."""
    commands = []
    for span in _code_spans(text):
        for match in re.finditer(
            r"(?:^\s*|\bcli\s+)(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?shopvec(?![\w./-])((?:\s+[^#|;&)]*)?)",
            span,
        ):
            words = shlex.split(match.group(1), posix=True)
            commands.append([w for w in words if w != "..."])
    return commands


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _text(page)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


def test_readme_is_a_short_guide_with_the_page_first() -> None:
    lines = _text(README).splitlines()
    assert len(lines) <= 210, f"the README has {len(lines)} lines; keep it near 200"
    first_screen = "\n".join(lines[:15])
    assert "](docs/page.png)" in first_screen, "the page's screenshot belongs on the first screen"
    assert (ROOT / "docs" / "page.png").is_file()


def test_readme_links_every_doc() -> None:
    text = _text(README)
    unlinked = [p.name for p in sorted(DOCS_DIR.glob("*.md")) if f"](docs/{p.name})" not in text]
    assert not unlinked, f"the README does not link: {unlinked}"


@pytest.mark.parametrize("page", [*COMMAND_PAGES, DOCS_DIR / "deployment.md"], ids=lambda p: p.name)
def test_commands_and_options_exist(page: Path) -> None:
    root = cli._parser()
    wrong = []
    commands = _shopvec_commands(_text(page))
    for words in commands:
        parser, path = root, ["shopvec"]
        for word in words:
            subcommands = _subcommands(parser)
            if word.startswith("-"):
                option = word.split("=", 1)[0]
                if option not in _options(parser):
                    wrong.append(f"{' '.join(path)} {option}")
            elif subcommands:
                if word not in subcommands:
                    wrong.append(f"{' '.join(path)} {word}")
                    break
                parser, path = subcommands[word], [*path, word]
    assert commands, f"{page.name} shows no shopvec command"
    assert not wrong, f"{page.name} names commands or options that do not exist: {wrong}"


def test_dev_tasks_exist() -> None:
    dev = _text(ROOT / "dev")
    tasks = set(re.findall(r"^  ([a-z]+)\)", dev, flags=re.MULTILINE))
    named = set(re.findall(r"\./dev ([a-z]+)", _text(README)))
    assert named <= tasks, f"./dev has no task {sorted(named - tasks)}"
    assert {"demo", "test"} <= named
    assert "exec ./dev test" in _text(ROOT / ".ci" / "run")


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=lambda p: p.name)
def test_settings_named_exist(page: Path) -> None:
    names = set(setting_names())
    named = set(re.findall(r"\bSHOPVEC_[A-Z0-9_]+\b", _text(page))) - {SETTINGS_SCHEME}
    assert named <= names, f"{page.name} names settings that do not exist: {sorted(named - names)}"


def test_readme_paths_exist() -> None:
    missing = []
    for span in _code_spans(_text(README)):
        for word in span.split():
            word = word.strip("'\"(),;").removeprefix("photo=@")
            if not re.fullmatch(r"\.?[\w.-]+(?:/[\w.*-]*)+|[\w-]+\.(?:txt|yml|yaml|toml|md)", word):
                continue
            if re.match(r"(?:application|text|image|multipart)/", word):
                continue  # a media type
            found = list(ROOT.glob(word)) if "*" in word else (ROOT / word).exists()
            if not found:
                missing.append(word)
    assert not missing, f"the README names paths that do not exist: {missing}"


def test_readme_topics_and_headers_are_the_contracts() -> None:
    text = _text(README)
    topics = {t for t in re.findall(r"^\| `(shopvec\.[a-z.-]+)` \|", text, flags=re.MULTILINE)}
    assert topics == set(wire.DEFAULT_TOPICS.values())
    headers = set(re.findall(r"^\| `([a-z-]+)` \| (?:request|every)", text, flags=re.MULTILINE))
    expected = {
        wire.HEADER_CORRELATION_ID,
        wire.HEADER_REPLY_TOPIC,
        wire.HEADER_SCHEMA_VERSION,
        wire.HEADER_CONTENT_TYPE,
    }
    assert headers == expected


def test_readme_figures_come_with_their_commands() -> None:
    section = _text(README).split("## Measured", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    assert len(rows) >= 6, "the table of measured figures is missing rows"
    for row in rows:
        command = row.rstrip(" |").rsplit("|", 1)[1]
        assert "`shopvec " in command or command.strip() == "the same", row


def test_benchmarks_sections_name_their_commands() -> None:
    text = _text(DOCS_DIR / "benchmarks.md")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    assert len(sections) >= 8
    for section in sections:
        title = section.splitlines()[0]
        assert re.search(r"`shopvec (?:bench|eval|convert) ", section), f"{title}: no command"
