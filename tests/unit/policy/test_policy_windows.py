"""Time windows: named zones, daylight saving, overnight windows, outside_hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.model import ActionClass, Intent
from core.policy import Policy, parse_policy

POLICY = """
version: 1
defaults: { timezone: Europe/Paris }
rules:
  - name: business-hours-deploys
    match:
      action: deploy
      within_hours: { days: [mon, tue, wed, thu, fri], start: "09:00", end: 18:00 }
    decision: allow
  - name: friday-night-maintenance
    match:
      action: maintenance
      within_hours: { days: [fri], start: "22:00", end: "06:00", timezone: America/New_York }
    decision: allow
  - name: dst-night
    match: { action: nightly, within_hours: { start: "01:30", end: "03:30" } }
    decision: allow
  - name: autumn-hour
    match: { action: backup, within_hours: { start: "02:00", end: "03:00" } }
    decision: allow
  - name: exports-only-by-day
    match: { action: export, outside_hours: { start: "08:00", end: "20:00" } }
    decision: deny
  - name: exports
    match: { action: export }
    decision: allow
  - name: saturday-early
    match: { action: sat-early, within_hours: { days: [sat], start: "00:00", end: "02:00" } }
    decision: allow
  - name: utc-window
    match: { action: utc-job, within_hours: { start: "23:00", end: "01:00", timezone: UTC } }
    decision: allow
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rule_for(policy: Policy, action: str, now: datetime) -> str | None:
    intent = Intent(
        agent="ops-bot",
        action=action,
        action_class=ActionClass.WRITE,
        target="cluster",
        environment="production",
    )
    return policy.evaluate(intent, now).rule


@pytest.mark.parametrize(
    ("action", "utc", "rule"),
    [
        # Paris is UTC+1 in January (CET) and UTC+2 in July (CEST).
        pytest.param("deploy", "2024-01-10T08:30", "business-hours-deploys", id="winter-0930"),
        pytest.param("deploy", "2024-01-10T07:30", None, id="winter-0830-too-early"),
        pytest.param("deploy", "2024-07-10T07:30", "business-hours-deploys", id="summer-0930"),
        pytest.param("deploy", "2024-07-10T16:30", None, id="summer-1830-too-late"),
        pytest.param("deploy", "2024-01-10T16:30", "business-hours-deploys", id="winter-1730"),
        pytest.param("deploy", "2024-01-10T08:00", "business-hours-deploys", id="start-inclusive"),
        pytest.param("deploy", "2024-01-10T17:00", None, id="end-exclusive"),
        pytest.param("deploy", "2024-01-13T10:00", None, id="saturday"),
        # The weekday is the one in the window's zone, not in UTC.
        pytest.param("sat-early", "2024-01-12T23:30", "saturday-early", id="fri-utc-is-sat-paris"),
        pytest.param("sat-early", "2024-01-13T23:30", None, id="sat-utc-is-sun-paris"),
        pytest.param("sat-early", "2024-01-13T00:30", "saturday-early", id="sat-0130-paris"),
        # New York is UTC-5 in January. The Friday window runs into Saturday morning.
        pytest.param("maintenance", "2024-01-13T03:30", "friday-night-maintenance", id="fri-2230"),
        pytest.param("maintenance", "2024-01-13T10:30", "friday-night-maintenance", id="sat-0530"),
        pytest.param("maintenance", "2024-01-13T11:00", None, id="sat-0600-end-exclusive"),
        pytest.param("maintenance", "2024-01-13T02:59", None, id="fri-2159"),
        pytest.param("maintenance", "2024-01-12T10:00", None, id="fri-0500-is-thursday-night"),
        pytest.param("maintenance", "2024-01-14T03:30", None, id="sat-2230-not-a-listed-day"),
        # 2024-03-31: Paris clocks jump from 02:00 CET to 03:00 CEST.
        pytest.param("nightly", "2024-03-31T00:45", "dst-night", id="spring-0145-cet"),
        pytest.param("nightly", "2024-03-31T01:15", "dst-night", id="spring-0315-cest"),
        pytest.param("nightly", "2024-03-31T01:45", None, id="spring-0345-cest"),
        pytest.param("nightly", "2024-03-31T00:15", None, id="spring-0115-cet"),
        # 2024-10-27: Paris clocks fall back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
        pytest.param("backup", "2024-10-27T00:30", "autumn-hour", id="autumn-first-0230"),
        pytest.param("backup", "2024-10-27T01:30", "autumn-hour", id="autumn-second-0230"),
        pytest.param("backup", "2024-10-27T02:00", None, id="autumn-0300-cet"),
        pytest.param("backup", "2024-10-26T23:30", None, id="autumn-0130-cest"),
        # outside_hours, default zone (Paris), every day
        pytest.param("export", "2024-01-10T10:00", "exports", id="export-by-day"),
        pytest.param("export", "2024-01-10T20:00", "exports-only-by-day", id="export-2100"),
        pytest.param("export", "2024-01-10T06:59", "exports-only-by-day", id="export-0759"),
        pytest.param("export", "2024-01-10T07:00", "exports", id="export-0800"),
        pytest.param("export", "2024-01-13T12:00", "exports", id="export-saturday-noon"),
        # overnight with no day list, in UTC
        pytest.param("utc-job", "2024-01-10T23:30", "utc-window", id="utc-2330"),
        pytest.param("utc-job", "2024-01-11T00:59", "utc-window", id="utc-0059"),
        pytest.param("utc-job", "2024-01-11T01:00", None, id="utc-0100"),
        pytest.param("utc-job", "2024-01-10T22:59", None, id="utc-2259"),
    ],
)
def test_time_windows(policy: Policy, action: str, utc: str, rule: str | None) -> None:
    assert rule_for(policy, action, at(utc)) == rule


def test_now_in_another_zone_means_the_same_instant(policy: Policy) -> None:
    from zoneinfo import ZoneInfo

    instant = at("2024-01-10T08:30")  # 09:30 in Paris
    tokyo = instant.astimezone(ZoneInfo("Asia/Tokyo"))
    assert rule_for(policy, "deploy", tokyo) == "business-hours-deploys"


def test_default_timezone_is_utc() -> None:
    policy = parse_policy("""
version: 1
rules:
  - name: day
    match: { within_hours: { start: "09:00", end: "17:00" } }
    decision: allow
""")
    assert policy.defaults.timezone == "UTC"
    assert rule_for(policy, "x", at("2024-01-10T09:00")) == "day"
    assert rule_for(policy, "x", at("2024-01-10T08:59")) is None
