"""docs/benchmarks.md: each benchmark rewrites its own section and keeps the others."""

from __future__ import annotations

from bench import real_cms, throughput
from bench.page import replace_section

TITLE = "Real CMSs"
HEADING = f"## {TITLE}"


def test_section_is_appended_then_replaced_and_other_sections_kept():
    doc = "# Benchmarks\n\n## Throughput\n\ntable\n\n### How measured\n\ntext\n"
    once = replace_section(doc, TITLE, f"{HEADING}\n\nfirst\n")
    assert once == doc + f"\n{HEADING}\n\nfirst\n"
    assert replace_section(once, TITLE, f"{HEADING}\n\nsecond\n") == doc + f"\n{HEADING}\n\nsecond\n"
    middle = replace_section(f"# B\n\n{HEADING}\n\nold\n\n## After\n\nkept\n", TITLE, f"{HEADING}\n\nnew\n")
    assert middle == f"# B\n\n{HEADING}\n\nnew\n\n## After\n\nkept\n"


def test_the_throughput_and_real_cms_benchmarks_keep_each_others_sections(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\n## {real_cms.SECTION_TITLE}\n\nreal CMS rows\n")
    throughput.write_doc([], page)
    text = page.read_text()
    assert "real CMS rows" in text and f"## {throughput.SECTION_TITLE}" in text
    assert "### How measured" in text  # inside the throughput section, so a rewrite replaces it too
    throughput.write_doc([], page)
    assert page.read_text() == text
