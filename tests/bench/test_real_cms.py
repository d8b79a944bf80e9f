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
    section_markdown,
    wordpress_version,
)

HEADING = f"## {SECTION_TITLE}"


def site(cms_type: str = "wordpress", calls_unit: str = "HTTP requests") -> BenchSite:
    return BenchSite(cms_type, f"{cms_type.title()} 1.0", "http://127.0.0.1:1", "s3cret-app-password", ["member"],
                     lambda: None, lambda: None, lambda: 0, login="admin", started_seconds=12.3,
                     calls_unit=calls_unit)


def run(cms: str = "wordpress", contacts: int = 1000, when: str = "2026-01-01T00:00:00+00:00",
        calls_unit: str = "HTTP requests", scheduler: bool = False, idle_sleep: float | None = None) -> dict:
    piped = {"state": "success", "seconds": 100.0, "create_seconds": 80.0, "calls": 2010, "created": contacts,
             "outcomes": {"created": contacts}, "mails": contacts, "civicrm_calls": 40,
             "tasks": {"preflight": 4.0, "create_accounts": 80.0}, "run_seconds": 99.5}
    if scheduler:  # what bench.throughput.scheduled_run adds; the tasks' CMS calls are not counted
        piped.update(calls=None, cpu_seconds=61.5, timeline=[
            ["preflight", 0.1, 0.2, 0.3, 1.0], ["create_accounts[0]", 1.2, 1.5, 2.0, 82.0],
            ["finalize", 82.5, 82.6, 83.0, 84.0], ["run end", None, None, None, 100.0]])
    bare = {"seconds": 50.0, "calls": 2000, "created": contacts, "mails": contacts}
    args = SimpleNamespace(cms=cms, contacts=contacts, batch_size=500, scheduler=scheduler,
                           scheduler_idle_sleep=idle_sleep)
    return make_row(site(cms, calls_unit), args, True, [(piped, bare)],
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


def test_backdrop_counts_bee_calls_and_says_so():
    row = run("backdrop", calls_unit="bee calls")
    assert row["calls_unit"] == "bee calls" and row["pipeline"]["calls_per_contact"] == 2.01
    assert "| 2.01 / 2.00 (bee calls) |" in section_markdown([row])


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
    text = section_markdown([run("drupal"), run("joomla")])
    table = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert len(table) == 2
    assert table[0].endswith("`.venv/bin/python -m bench.real_cms --cms drupal` |")
    assert "| 0.50 / 0.62 |" in table[0] and "| 2.01 / 2.00 |" in table[0]
    assert table[1].endswith("`.venv/bin/python -m bench.real_cms --cms joomla` |")
    assert "by Airflow's clock 99.5 s" in text
    assert text.startswith(HEADING) and "How measured" in text
    assert not any(line.startswith("## ") for line in text.splitlines()[1:])


def test_a_run_under_the_scheduler_is_its_own_row_beside_the_dag_test_one():
    rows = [run("wordpress"), run("wordpress", scheduler=True), run("wordpress", when="2026-01-02T00:00:00+00:00"),
            run("wordpress", scheduler=True, idle_sleep=0.2)]
    latest = latest_rows(rows)
    assert [(real_cms.runner(r), r["when"][:10]) for r in latest] == [
        ("dag.test", "2026-01-02"), ("scheduler", "2026-01-01"), ("scheduler, idle sleep 0.2 s", "2026-01-01")]
    # rows written before the runner was recorded ran under dag.test()
    legacy = {key: value for key, value in run("drupal").items() if key != "runner"}
    assert real_cms.runner(legacy) == "dag.test"


def test_a_scheduler_row_shows_no_pipeline_calls_and_where_the_fixed_cost_went():
    row = run(scheduler=True)
    assert row["pipeline"]["calls"] is None and row["pipeline"]["calls_per_contact"] is None
    assert row["pipeline"]["cpu_seconds"] == 61.5 and row["pipeline"]["timeline"][-1][4] == 100.0
    text = section_markdown([row])
    (line,) = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert "| scheduler | 100.0 | 80.0 | 50.0 |" in line and "| — / 2.00 |" in line
    assert "run by scheduler" in text and "CPU of every Airflow process 61.5 s" in text
    assert "the first create began 2.0 s after the trigger and the run ended 18.0 s after the last" in text


def scheduled_round(seconds: float, create_seconds: float, bare_seconds: float, run_end: float) -> tuple[dict, dict]:
    piped = {"state": "success", "seconds": seconds, "create_seconds": create_seconds, "run_seconds": seconds,
             "calls": None, "created": 1000, "outcomes": {"created": 1000}, "mails": 1000, "civicrm_calls": 160,
             "tasks": {"plan": 0.5, "create_accounts": create_seconds}, "cpu_seconds": 8.0,
             "peak_rss_mb": {"plan": 200.0, "create_accounts": 170.0 + seconds},
             "timeline": [["create_accounts[0]", 1.0, 1.5, 2.0, 2.0 + create_seconds],
                          ["run end", None, None, None, run_end]]}
    return piped, {"seconds": bare_seconds, "calls": 2000, "created": 1000, "mails": 1000}


def test_rounds_alternate_which_side_is_measured_first():
    assert [real_cms.round_order(number) for number in range(3)] == [
        ("pipeline", "bare"), ("bare", "pipeline"), ("pipeline", "bare")]


def test_a_row_of_rounds_holds_their_means_and_each_rounds_own_ratios():
    rounds = [scheduled_round(50.0, 45.0, 40.0, 50.0), scheduled_round(40.0, 36.0, 44.0, 40.0),
              scheduled_round(45.0, 40.0, 42.0, 45.0)]
    args = SimpleNamespace(cms="wordpress", contacts=1000, batch_size=1000, scheduler=True, scheduler_idle_sleep=0.2)
    row = make_row(site(), args, True, rounds, command="bench", when="2026-01-01T00:00:00+00:00")
    p, b = row["pipeline"], row["bare"]
    assert (p["seconds"], p["create_seconds"], b["seconds"]) == (45.0, 40.33, 42.0)
    assert p["created"] == 1000 and b["created"] == 1000 and p["outcomes"] == {"created": 3000}
    assert row["ratio_whole"] == rate_ratio(1000, 45.0, 1000, 42.0)
    assert p["timeline"][-1][4] == 45.0  # the round of median length
    assert p["peak_rss_mb"]["create_accounts"] == 220.0 and p["tasks"]["plan"] == 0.5
    assert [r["first"] for r in row["rounds"]] == ["pipeline", "bare", "pipeline"]
    assert [round(r["ratio_whole"], 2) for r in row["rounds"]] == [0.8, 1.1, 0.93]
    text = section_markdown([row])
    (line,) = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert "| scheduler, idle sleep 0.2 s, mean of 3 rounds | 45.0 | 40.3 | 42.0 |" in line
    assert "outcomes of its 3 rounds {'created': 3000}" in text
    assert ("round 2 (bare loop first): pipeline 40.0 s, create phase 36.0 s, bare loop 44.0 s, × bare 1.10 / 1.22"
            in text)


def test_one_round_is_the_row_as_before():
    row = run()
    assert "rounds" not in row and "mean of" not in section_markdown([row])


def test_wordpress_starter_is_registered_and_reads_the_version(tmp_path):
    assert "wordpress" in real_cms.STARTERS
    version_file = tmp_path / "version.php"
    version_file.write_text("<?php\n$wp_version = '6.1.9';\n")
    assert wordpress_version(version_file) == "6.1.9"
    assert wordpress_version(tmp_path / "missing.php") == ""


def test_bee_calls_are_counted_and_the_hook_restored(monkeypatch):
    from cms_operators.backdrop.hook import BeeHook

    monkeypatch.setattr(BeeHook, "run", lambda hook, operation, arguments=None: operation)
    original = BeeHook.run
    counter = real_cms.call_counter(site("backdrop", "bee calls"))
    with counter.counting():
        assert BeeHook.run(object(), "create_users", {}) == "create_users"
        BeeHook.run(object(), "send_mails")
    assert counter.count == 2 and BeeHook.run is original
