"""Every snippet in the README and ``docs/**/*.md`` that a reader may copy is checked.

* a ```` ```yaml ```` block parses; one that looks like a policy (a top-level ``version``,
  ``rules`` or ``approver_groups``) passes ``stepup policy check``, unless its info string says
  ``fragment`` (```` ```yaml fragment ````); one whose first line names
  ``manifests/policy.example.yaml`` shows that file's own entries, unchanged;
* a ```` ```json ```` block parses;
* a ```` ```sh ```` / ```` ```bash ```` / ```` ```shell ```` block passes ``bash -n``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bot.cli import app

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_POLICY = REPO / "manifests" / "policy.example.yaml"
SHELLS = {"sh", "bash", "shell"}
POLICY_KEYS = {"version", "rules", "approver_groups"}
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    info: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def fenced_blocks(path: Path) -> list[Snippet]:
    """The fenced code blocks of a Markdown file (CommonMark fences, backticks or tildes)."""
    blocks: list[Snippet] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        indent = len(lines[index]) - len(lines[index].lstrip(" "))
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = lines[end].strip()
            if closing and set(closing) == {fence[0]} and len(closing) >= len(fence):
                break
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        language = info.split()[0].lower() if info else ""
        blocks.append(Snippet(path, index + 1, language, info, "\n".join(body) + "\n"))
        index = end + 1
    return blocks


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def snippets(*languages: str) -> list[Any]:
    return [
        pytest.param(snippet, id=snippet.where)
        for path in documents()
        for snippet in fenced_blocks(path)
        if snippet.language in languages
    ]


def test_the_fence_parser_finds_nested_fences(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n````text\n```json\n{}\n```\n````\n\n```yaml fragment\na: 1\n```\n  ```sh\n  ls\n  ```\n"
    )
    found = fenced_blocks(doc)
    assert [(s.language, s.info, s.text) for s in found] == [
        ("text", "text", "```json\n{}\n```\n"),
        ("yaml", "yaml fragment", "a: 1\n"),
        ("sh", "sh", "ls\n"),
    ]


def test_the_documents_have_snippets_to_check() -> None:
    assert snippets("yaml") and snippets("json") and snippets(*SHELLS)


def looks_like_policy(data: object) -> bool:
    return isinstance(data, dict) and bool(POLICY_KEYS & set(data))


@pytest.mark.parametrize("snippet", snippets("yaml", "yml"))
def test_yaml_snippets_parse_and_policies_pass_policy_check(
    snippet: Snippet, tmp_path: Path
) -> None:
    try:
        data = yaml.safe_load(snippet.text)
    except yaml.YAMLError as exc:
        pytest.fail(f"{snippet.where}: not YAML: {exc}")
    if not looks_like_policy(data) or "fragment" in snippet.info.split()[1:]:
        return
    policy = tmp_path / "policy.yaml"
    policy.write_text(snippet.text, encoding="utf-8")
    result = CliRunner().invoke(app, ["policy", "check", str(policy)])
    assert result.exit_code == 0, f"{snippet.where}: stepup policy check: {result.output}"
    if "manifests/policy.example.yaml" in snippet.text.splitlines()[0]:
        assert_excerpt_of_example(snippet, data)


def assert_excerpt_of_example(snippet: Snippet, shown: dict[str, Any]) -> None:
    """What a snippet quoting the example policy shows is what the example holds."""
    example = yaml.safe_load(EXAMPLE_POLICY.read_text(encoding="utf-8"))
    for key, value in shown.items():
        if key == "rules":
            rules = {rule["name"]: rule for rule in example["rules"]}
            for rule in value:
                assert rule == rules.get(rule["name"]), f"{snippet.where}: rule {rule['name']}"
        elif isinstance(value, dict):
            for name, entry in value.items():
                assert entry == example[key].get(name), f"{snippet.where}: {key}.{name}"
        else:
            assert value == example[key], f"{snippet.where}: {key}"


@pytest.mark.parametrize("snippet", snippets("json"))
def test_json_snippets_parse(snippet: Snippet) -> None:
    try:
        json.loads(snippet.text)
    except ValueError as exc:
        pytest.fail(f"{snippet.where}: not JSON: {exc}")


@pytest.mark.parametrize("snippet", snippets(*SHELLS))
def test_shell_snippets_pass_bash_n(snippet: Snippet) -> None:
    bash = shutil.which("bash")
    assert bash is not None, "bash is needed to check the shell snippets"
    checked = subprocess.run(
        [bash, "-n"], input=snippet.text, capture_output=True, text=True, timeout=10
    )
    assert checked.returncode == 0, f"{snippet.where}: bash -n: {checked.stderr}"
