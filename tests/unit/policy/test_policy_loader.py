"""Reading files, digests, YAML quirks and PolicyHolder.reload keeping the old policy."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from core.errors import PolicyError
from core.model import ActionClass, Intent
from core.policy import PolicyHolder, load_policy, parse_policy

NOW = datetime(2024, 5, 15, 10, 0, tzinfo=UTC)
GOOD = "version: 1\nrules:\n  - { name: reads, match: { action_class: read }, decision: allow }\n"
OTHER = "version: 1\nrules:\n  - { name: all, match: {}, decision: allow }\n"
READ = Intent("bot", "s3.get", ActionClass.READ, "bucket", "production")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_digest_is_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    text = "# café policy\n" + GOOD
    path = write(tmp_path / "policy.yaml", text)
    policy = load_policy(path)
    expected = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert policy.digest == expected
    assert parse_policy(text).digest == expected
    assert parse_policy(text + "\n").digest != expected
    assert policy.source == str(path)
    assert policy.evaluate(READ, NOW).policy_digest == expected


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file") as missing:
        load_policy(tmp_path / "nope.yaml")
    assert missing.value.location == str(tmp_path / "nope.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("# caf\xe9\n".encode("latin-1") + GOOD.encode())
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(latin1)


def test_unquoted_clock_times_stay_times() -> None:
    # YAML 1.1 would read 18:00 as the base-60 integer 1080
    policy = parse_policy(
        "version: 1\nrules:\n  - name: day\n    match: { within_hours: { start: 09:00, "
        "end: 18:00 } }\n    decision: allow\n"
    )
    window = policy.rules[0].conditions[0]
    assert (window.window.start, window.window.end) == (time(9), time(18))  # type: ignore[attr-defined]


def test_octal_looking_numbers_are_not_numbers() -> None:
    with pytest.raises(PolicyError, match="valid integer") as caught:
        parse_policy("version: 01\n")
    assert caught.value.location == "version"


def test_holder_reload_swaps_in_a_good_policy(tmp_path: Path) -> None:
    path = write(tmp_path / "policy.yaml", GOOD)
    holder = PolicyHolder.from_file(path)
    first = holder.current
    assert first.rule_names == ("reads",)
    write(path, OTHER)
    reloaded = holder.reload(path)
    assert holder.current is reloaded
    assert reloaded.rule_names == ("all",)
    assert reloaded.digest != first.digest


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param("version: 1\nrules: [\n", id="yaml-syntax"),
        pytest.param("", id="empty"),
        pytest.param(
            "version: 1\nrules:\n  - { name: x, match: {}, decision: approve }\n",
            id="approve-without-approvers",
        ),
    ],
)
def test_holder_keeps_the_old_policy_when_reload_fails(tmp_path: Path, broken: str) -> None:
    path = write(tmp_path / "policy.yaml", GOOD)
    holder = PolicyHolder(load_policy(path))
    old = holder.current
    write(path, broken)
    with pytest.raises(PolicyError):
        holder.reload(path)
    assert holder.current is old
    assert holder.current.evaluate(READ, NOW).rule == "reads"


def test_holder_keeps_the_old_policy_when_the_file_is_gone(tmp_path: Path) -> None:
    holder = PolicyHolder(parse_policy(GOOD))
    old = holder.current
    with pytest.raises(PolicyError):
        holder.reload(tmp_path / "deleted.yaml")
    assert holder.current is old


def test_holder_wraps_unexpected_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.policy.loader as loader

    def explode(text: str, digest: str, source: str) -> None:
        raise RuntimeError("disk on fire")

    holder = PolicyHolder(parse_policy(GOOD))
    old = holder.current
    monkeypatch.setattr(loader, "_parse", explode)
    with pytest.raises(PolicyError, match="disk on fire"):
        holder.reload(write(tmp_path / "p.yaml", GOOD))
    assert holder.current is old


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param("version: 1\nrules: [\n", ": line 3: YAML syntax error", id="yaml-syntax"),
        pytest.param("", ": the policy is empty", id="empty"),
        pytest.param(
            "version: 1\nrules:\n  - { name: x, match: {}, decision: approve, approvers: nobody }\n",
            ": rules[0] (x).approvers: undefined approver group 'nobody'",
            id="undefined-group",
        ),
    ],
)
def test_an_invalid_file_is_named_in_the_error(tmp_path: Path, text: str, where: str) -> None:
    """At start-up the error is all the operator sees: it starts with the file's path."""
    path = write(tmp_path / "policy.yaml", text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}{where}")
    assert caught.value.detail == str(caught.value)
    with pytest.raises(PolicyError) as from_holder:
        PolicyHolder.from_file(path)
    assert str(from_holder.value) == str(caught.value)
