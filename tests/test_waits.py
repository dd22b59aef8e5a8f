"""The test helpers' timeout scale (SPOOFWATCH_TEST_TIMEOUT_SCALE)."""

from __future__ import annotations

import pytest

from waits import ENV, scaled, wait_until


def test_the_scale_multiplies_every_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert scaled(5.0) == 5.0
    monkeypatch.setenv(ENV, "3")
    assert scaled(5.0) == 15.0


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "slow"])
def test_a_bad_scale_is_named(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(ENV, bad)
    with pytest.raises(ValueError, match=f"{ENV}: expected a positive number"):
        scaled(1.0)


def test_wait_until_returns_once_the_condition_holds_and_names_what_it_waited_for() -> None:
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), 5, "the third poll", poll_s=0.0)
    with pytest.raises(TimeoutError, match="for nothing at all"):
        wait_until(lambda: False, 0.05, "nothing at all", poll_s=0.01)
