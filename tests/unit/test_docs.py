"""The README's settings section is generated from the table and must be current."""

from __future__ import annotations

from pathlib import Path

from dynocorn import docs
from dynocorn.settings import GUNICORN_EXTRAS_SECTION, SETTINGS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_section_matches_the_code() -> None:
    current = README.read_text(encoding="utf-8")
    assert docs.render_readme(current) == current, "run `make docs` to regenerate README.md"


def test_every_setting_and_flag_is_documented() -> None:
    text = docs.settings_markdown()
    for setting in SETTINGS.values():
        if setting.section == GUNICORN_EXTRAS_SECTION:
            assert f"`{setting.name}` (" in text  # listed in one paragraph
        else:
            assert f"| `{setting.name}` |" in text
        for flag in setting.flags:
            assert f"`{flag}`" in text


def test_gunicorn_27_extras_are_listed_once_and_not_as_table_rows() -> None:
    text = docs.settings_markdown()
    assert "`permit_obsolete_folding` (`--permit-obsolete-folding`)" in text
    assert "`ssl_context` (config file)" in text
    assert "| `dirty_workers` |" not in text
