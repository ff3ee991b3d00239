"""The manual's settings reference (docs/settings.md) is generated from the table and must be
current."""

from __future__ import annotations

from pathlib import Path

from dynocorn import docs
from dynocorn.settings import GUNICORN_EXTRAS_SECTION, SETTINGS

SETTINGS_PAGE = Path(__file__).resolve().parents[2] / docs.SETTINGS_PAGE


def test_the_settings_page_matches_the_code() -> None:
    current = SETTINGS_PAGE.read_text(encoding="utf-8")
    wanted = docs.render_settings_page(current)
    assert wanted == current, f"run `make docs` to regenerate {docs.SETTINGS_PAGE}"


def test_the_type_of_every_setting_is_generated_from_the_table() -> None:
    """setting_values.py: what strict type checking reads for `cfg.<name>`."""
    assert docs.VALUES_MODULE.read_text(encoding="utf-8") == docs.setting_values_source(), (
        "run `make docs` to regenerate lib/dynocorn/setting_values.py"
    )
    from dynocorn.setting_values import SettingValues

    assert list(SettingValues.__annotations__) == list(SETTINGS)


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


def test_no_test_or_code_reads_the_shared_folder_beside_the_checkout() -> None:
    """The checkout is complete on its own: CI has ../shared, a user's clone does not."""
    root = Path(__file__).resolve().parents[2]
    readers = [
        path.relative_to(root)
        for folder in ("lib", "tests", "bench", "bin", "examples")
        for path in (root / folder).rglob("*.py")
        if path != Path(__file__).resolve()
        and any(word in path.read_text(encoding="utf-8") for word in ('"shared"', "'shared'"))
    ]
    assert readers == [], f"these read ../shared: {readers}"


def test_the_no_sendfile_flag_says_what_it_does() -> None:
    """The table's help is the setting's; for this flag it once said "Use sendfile()"."""
    from dynocorn.arguments import build_parser

    text = " ".join(build_parser().format_help().split())
    flag = "--no-sendfile Send `wsgi.file_wrapper` responses with sendfile();"
    assert f"{flag} `--no-sendfile` turns it off." in text
