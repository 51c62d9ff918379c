"""Every engine's API has a token: configured, or generated once per data directory (0600) and reused."""
from __future__ import annotations

import pytest

from engine.api_token import TokenFileError, engine_token, token_path


def test_a_token_is_generated_once_owner_only_and_reused(tmp_path):
    first = engine_token("", str(tmp_path / "data"))
    assert len(first) >= 32
    assert token_path(str(tmp_path / "data")).stat().st_mode & 0o777 == 0o600
    assert engine_token("", str(tmp_path / "data")) == first  # a restart keeps the dashboard URL working
    assert engine_token("", str(tmp_path / "other")) != first


def test_a_configured_token_wins_and_writes_nothing(tmp_path):
    assert engine_token("configured", str(tmp_path)) == "configured"
    assert not token_path(str(tmp_path)).exists()


def test_an_unusable_data_dir_is_one_clear_message(tmp_path):
    (tmp_path / "file").write_text("not a directory")  # fails for root too, unlike a chmod
    with pytest.raises(TokenFileError) as e:
        engine_token("", str(tmp_path / "file" / "data"))
    assert "api_token" in str(e.value) and "web.token" in str(e.value)
