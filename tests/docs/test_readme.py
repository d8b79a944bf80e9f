"""The README documents the interface exactly: its settings table is the schema's own."""

from pathlib import Path

from provisioning.settings import settings_reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_matches_the_schema():
    text = README.read_text()
    start = text.index("<!-- settings-reference:start")
    start = text.index("\n", start) + 1
    end = text.index("<!-- settings-reference:end -->")
    assert text[start:end].strip() == settings_reference_markdown().strip()


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    assert "make demo" in text[:2500] and "make test" in text[:2500]
