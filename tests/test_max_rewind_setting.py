"""The ``max_rewind`` setting: 100 in both profiles, read like every other setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_sse.settings import Settings, SettingsError, load_settings


def test_max_rewind_is_100_in_both_profiles_and_read_from_flags_env_and_file(tmp_path: Path) -> None:
    assert Settings().max_rewind == 100 == Settings.from_profile("prod").max_rewind
    config = tmp_path / "trio-sse.toml"
    config.write_text("max_rewind = 7\n")
    assert load_settings(config_file=str(config), env={}).max_rewind == 7
    assert load_settings(env={"TRIO_SSE_MAX_REWIND": "8"}, config_file=str(config)).max_rewind == 8
    assert load_settings({"max-rewind": "9"}, env={"TRIO_SSE_MAX_REWIND": "8"}).max_rewind == 9
    assert load_settings({"max_rewind": "0"}, env={}).max_rewind == 0  # 0 turns rewind off


@pytest.mark.parametrize("raw", ["-1", "1.5", "many"])
def test_a_bad_max_rewind_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(SettingsError, match="max_rewind"):
        load_settings(env={"TRIO_SSE_MAX_REWIND": raw})
