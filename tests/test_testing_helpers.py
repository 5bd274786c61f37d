"""The two rules hyperfs.testing gives the suite: in CI a missing requirement fails rather
than skips, and random inputs are replayable from a printed seed."""

from __future__ import annotations

import pytest

from hyperfs.testing.requirements import missing, require
from hyperfs.testing.seeds import SEED_ENV, fresh_seed, seeded_random


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_a_missing_requirement_skips_outside_ci(monkeypatch: pytest.MonkeyPatch,
                                               ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    require(True, "nothing")
    with pytest.raises(pytest.skip.Exception, match="needs a unicorn"):
        require(False, "a unicorn")
    with pytest.raises(pytest.skip.Exception, match="needs a unicorn"):
        missing("a unicorn")


def test_a_missing_requirement_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require(1, "nothing")
    with pytest.raises(pytest.fail.Exception, match="CI=true and this test needs a unicorn"):
        require([], "a unicorn")
    with pytest.raises(pytest.fail.Exception, match="needs a unicorn"):
        missing("a unicorn")


def test_the_seed_is_printed_and_replayed(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(SEED_ENV, raising=False)
    seed = fresh_seed()
    assert f"{SEED_ENV}={seed}" in capsys.readouterr().out
    monkeypatch.setenv(SEED_ENV, str(seed))
    assert seeded_random().random() == seeded_random(seed).random()
    assert f"random seed {seed} " in capsys.readouterr().out
