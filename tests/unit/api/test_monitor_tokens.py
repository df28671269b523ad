"""Where monitor tokens come from: settings, the environment and a tokens file."""

from __future__ import annotations

from pathlib import Path

import pytest

from opendoctor.api.auth import Monitors, MonitorTokenError
from opendoctor.core.settings import ApiSettings, load_settings


def tokens_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "monitor-tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_tokens_from_settings_file_and_the_old_southbound_token(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, "# name token\nzabbix z-tok\n\ncollectd c-tok\n")
    monitors = Monitors.load(
        ApiSettings(
            monitor_tokens={"doctor": "d-tok"},
            monitor_tokens_file=path,
            southbound_token="s-tok",
        )
    )
    assert dict(monitors.tokens) == {
        "collectd": b"c-tok",
        "doctor": b"d-tok",
        "southbound": b"s-tok",
        "zabbix": b"z-tok",
    }
    assert not monitors.anonymous


def test_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENDOCTOR_API__MONITOR_TOKENS", '{"doctor": "from-env"}')
    settings = load_settings()
    assert dict(Monitors.load(settings.api).tokens) == {"doctor": b"from-env"}
    # Secrets stay out of what settings print.
    assert "from-env" not in repr(settings) and "from-env" not in str(settings.api)


@pytest.mark.parametrize(
    ("text", "mode", "problem"),
    [
        ("doctor d-tok\n", 0o640, "chmod 600"),
        ("doctor d-tok\n", 0o604, "chmod 600"),
        ("doctor\n", 0o600, "line 1: expected `name secret`"),
        ("# fine\ndoctor d-tok extra\n", 0o600, "line 2"),
    ],
)
def test_a_tokens_file_others_can_read_or_that_makes_no_sense_is_refused(
    tmp_path: Path, text: str, mode: int, problem: str
) -> None:
    path = tokens_file(tmp_path, text, mode)
    with pytest.raises(MonitorTokenError, match=problem):
        Monitors.load(ApiSettings(monitor_tokens_file=path))


def test_a_missing_tokens_file_or_an_empty_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MonitorTokenError, match="No such file"):
        Monitors.load(ApiSettings(monitor_tokens_file=tmp_path / "nope"))
    with pytest.raises(MonitorTokenError, match="empty token"):
        Monitors.load(ApiSettings(monitor_tokens={"doctor": ""}))
