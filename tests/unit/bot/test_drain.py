"""The scheduler's Drain: one pass at a time, callers never wait, no request is lost."""

from __future__ import annotations

import threading

import pytest

from bot.scheduler import Drain


def test_a_lone_call_runs_one_pass_and_returns_its_count() -> None:
    calls: list[int] = []

    def work() -> int:
        calls.append(1)
        return 3

    assert Drain(work)() == 3
    assert calls == [1]


def test_requests_made_during_a_pass_are_served_by_one_more_pass() -> None:
    inside, release = threading.Event(), threading.Event()
    passes: list[str] = []

    def work() -> int:
        passes.append(threading.current_thread().name)
        if len(passes) == 1:
            inside.set()
            assert release.wait(5)
        return 1

    drain = Drain(work)
    runner = threading.Thread(target=drain, name="runner")
    runner.start()
    assert inside.wait(5)
    assert drain() == 0  # a pass is running: the caller returns at once
    assert drain() == 0
    release.set()
    runner.join(5)
    assert not runner.is_alive()
    assert passes == ["runner", "runner"]  # two requests meanwhile: one more pass, not two


def test_a_failing_pass_raises_and_the_next_call_runs_again() -> None:
    outcomes = iter([RuntimeError("database gone"), 2])

    def work() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    drain = Drain(work)
    with pytest.raises(RuntimeError):
        drain()
    assert drain() == 2
