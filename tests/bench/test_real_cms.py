"""The real-CMS benchmark's record keeping: runs -> JSON rows -> its own section of docs/benchmarks.md."""

from __future__ import annotations

from types import SimpleNamespace

from bench import real_cms
from bench.real_cms import (
    SECTION_TITLE,
    BenchSite,
    append_row,
    latest_rows,
    make_row,
    rate_ratio,
    replace_section,
    section_markdown,
    wordpress_version,
)

HEADING = f"## {SECTION_TITLE}"


def site(cms_type: str = "wordpress", counts_http_calls: bool = True) -> BenchSite:
    return BenchSite(cms_type, f"{cms_type.title()} 1.0", "http://127.0.0.1:1", "s3cret-app-password", ["member"],
                     lambda: None, lambda: None, lambda: 0, login="admin", started_seconds=12.3,
                     counts_http_calls=counts_http_calls)


def run(cms: str = "wordpress", contacts: int = 1000, when: str = "2026-01-01T00:00:00+00:00",
        counts_http_calls: bool = True) -> dict:
    piped = {"state": "success", "seconds": 100.0, "create_seconds": 80.0, "calls": 2010, "created": contacts,
             "outcomes": {"created": contacts}, "mails": contacts, "civicrm_calls": 40,
             "tasks": {"preflight": 4.0, "create_accounts": 80.0}}
    bare = {"seconds": 50.0, "calls": 2000, "created": contacts, "mails": contacts}
    args = SimpleNamespace(cms=cms, contacts=contacts, batch_size=500)
    return make_row(site(cms, counts_http_calls), args, True, piped, bare,
                    command=f".venv/bin/python -m bench.real_cms --cms {cms}", when=when)


def test_rate_ratio_is_pipeline_rate_over_bare_rate():
    assert rate_ratio(1000, 100.0, 1000, 50.0) == 0.5
    assert rate_ratio(1000, 0.0, 1000, 50.0) is None
    assert rate_ratio(1000, 100.0, 0, 50.0) is None


def test_row_has_the_measures_and_no_credentials():
    row = run()
    assert (row["ratio_whole"], row["ratio_create"]) == (0.5, 0.625)
    assert row["pipeline"]["calls_per_contact"] == 2.01 and row["bare"]["calls_per_contact"] == 2.0
    assert row["state"] == "success" and row["notify"] is True and row["batch_size"] == 500
    assert "s3cret" not in repr(row)


def test_calls_per_contact_is_empty_when_the_site_is_not_spoken_to_over_http():
    row = run("backdrop", counts_http_calls=False)
    assert row["pipeline"]["calls_per_contact"] is None and row["bare"]["calls_per_contact"] is None


def test_runs_are_appended(tmp_path):
    path = tmp_path / "results" / "real_cms.json"
    append_row(run(), path)
    assert len(append_row(run(), path)) == 2


def test_latest_run_per_cms_and_n_ordered_by_cms():
    rows = [run("wordpress", when="2026-01-02T00:00:00+00:00"), run("drupal"),
            run("wordpress", when="2026-01-01T00:00:00+00:00"), run("wordpress", contacts=200)]
    latest = latest_rows(rows)
    assert [(r["cms"], r["contacts"]) for r in latest] == [("drupal", 1000), ("wordpress", 200), ("wordpress", 1000)]
    assert latest[2]["when"] == "2026-01-02T00:00:00+00:00"


def test_section_has_one_row_per_run_with_its_command():
    text = section_markdown([run("drupal"), run("backdrop", counts_http_calls=False)])
    table = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert len(table) == 2
    assert table[0].endswith("`.venv/bin/python -m bench.real_cms --cms drupal` |")
    assert "| 0.50 / 0.62 |" in table[0] and "| 2.01 / 2.00 |" in table[0]
    assert "| — / — |" in table[1]
    assert text.startswith(HEADING) and "How measured" in text
    assert not any(line.startswith("## ") for line in text.splitlines()[1:])


def test_section_is_appended_then_replaced_and_other_sections_kept():
    doc = "# Benchmarks\n\n## Throughput\n\ntable\n\n## How measured\n\ntext\n"
    once = replace_section(doc, f"{HEADING}\n\nfirst\n")
    assert once == doc + f"\n{HEADING}\n\nfirst\n"
    assert replace_section(once, f"{HEADING}\n\nsecond\n") == doc + f"\n{HEADING}\n\nsecond\n"
    middle = replace_section(f"# B\n\n{HEADING}\n\nold\n\n## After\n\nkept\n", f"{HEADING}\n\nnew\n")
    assert middle == f"# B\n\n{HEADING}\n\nnew\n\n## After\n\nkept\n"


def test_wordpress_starter_is_registered_and_reads_the_version(tmp_path):
    assert "wordpress" in real_cms.STARTERS
    version_file = tmp_path / "version.php"
    version_file.write_text("<?php\n$wp_version = '6.1.9';\n")
    assert wordpress_version(version_file) == "6.1.9"
    assert wordpress_version(tmp_path / "missing.php") == ""
