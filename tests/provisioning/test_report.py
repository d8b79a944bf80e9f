import json

import pandas as pd
import pytest

from provisioning.report import (
    RESULT_COLUMNS,
    attention_table,
    outcome_table,
    planned_outcomes,
    summary_table,
    to_records,
)


def results(*rows) -> pd.DataFrame:
    columns = ["contact_id", "outcome", "username", "reason"]
    return pd.DataFrame([dict(zip(columns, row, strict=True)) for row in rows], columns=columns)


def counts_in(table: str) -> dict[str, int]:
    lines = table.splitlines()
    return {line.split()[0]: int(line.split()[1]) for line in lines[2:] if not line.startswith("-")}


def test_summary_counts_every_outcome_in_a_fixed_order():
    table = summary_table(
        results(
            (3, "failed", "", "no primary email"),
            (1, "created", "a", "new account"),
            (2, "created", "b", "new account"),
            (4, "deferred", "c", "beyond limit 3"),
        )
    )
    assert counts_in(table) == {
        "created": 2,
        "linked_existing": 0,
        "already_linked": 0,
        "failed": 1,
        "deferred": 1,
        "approval_rejected": 0,
        "not_triggered": 0,
        "left_to_nightly": 0,
        "total": 4,
    }
    names = [line.split()[0] for line in table.splitlines()]
    assert (
        names.index("created") < names.index("linked_existing") < names.index("failed") < names.index("total")
    )


def test_summary_lists_unexpected_outcomes_too():
    counts = counts_in(summary_table(results((1, "weird", "", "?"), (2, None, "", "?"))))
    assert counts["weird"] == 1
    assert counts["unknown"] == 1
    assert counts["total"] == 2


def test_summary_columns_are_aligned():
    table = summary_table(results(*[(i, "created", "x", "r") for i in range(1, 1001)]))
    data_lines = [line for line in table.splitlines()[2:] if not line.startswith("-")]
    assert len({len(line) for line in data_lines}) == 1  # counts right-aligned to one edge
    assert "1000" in table


def test_summary_of_nothing():
    assert counts_in(summary_table(results()))["total"] == 0


def test_outcome_table_lists_contacts_in_order():
    table = outcome_table(
        results((12, "failed", "", "no primary email"), (3, "created", "jane.doe", "new account"))
    )
    lines = table.splitlines()
    assert lines[0].split() == ["contact_id", "outcome", "username", "reason"]
    assert lines[2].split()[:3] == ["3", "created", "jane.doe"]
    assert lines[3].split()[:2] == ["12", "failed"]
    assert lines[3].endswith("no primary email")


def test_outcome_table_caps_the_rows():
    table = outcome_table(results(*[(i, "created", f"u{i}", "new account") for i in range(1, 8)]), max_rows=5)
    lines = table.splitlines()
    assert len(lines) == 2 + 5 + 1
    assert lines[-1] == "... and 2 more contacts"


@pytest.mark.parametrize("reason", ["line one\nline two", "cr\rhere"])
def test_outcome_table_keeps_one_line_per_contact(reason):
    table = outcome_table(results((1, "failed", None, reason)))
    assert len(table.splitlines()) == 3


def test_planned_outcomes_have_the_create_result_shape(run_plan, contact):
    plan = run_plan(
        [contact(3, uf_id=9, uf_name="old@example.org"), contact(1), contact(2, email=None)]
    ).reset_index(drop=True)
    result = planned_outcomes(plan)
    assert list(result.columns) == [*RESULT_COLUMNS, "display_name"]  # the name, for the attention table
    assert result["contact_id"].tolist() == [1, 2, 3]
    assert result["outcome"].tolist() == ["created", "failed", "already_linked"]
    assert result["username"].tolist() == ["jane.doe", "", "old@example.org"]
    assert result["uf_id"].tolist() == [None, None, 9]
    assert result["reason"].tolist()[1] == "no primary email"
    assert result["mail"].isna().all()


def test_to_records_gives_plain_python_values():
    frame = pd.DataFrame(
        {"contact_id": [1, 2], "uf_id": [45, None], "attempt": [None, 2], "ok": [True, False]}
    )
    records = to_records(frame)
    assert records == [
        {"contact_id": 1, "uf_id": 45, "attempt": None, "ok": True},
        {"contact_id": 2, "uf_id": None, "attempt": 2, "ok": False},
    ]
    assert all(type(record["contact_id"]) is int for record in records)
    assert type(records[0]["uf_id"]) is int and type(records[1]["attempt"]) is int
    assert json.dumps(records, allow_nan=False)


def test_a_dry_run_says_what_would_happen_and_never_created(run_plan, contact):
    plan = run_plan([contact(1), contact(2, email=None), contact(3, uf_id=9, uf_name="old@example.org")])
    result = planned_outcomes(plan, dry_run=True)
    assert sorted(result["outcome"]) == ["already linked", "would create", "would fail"]
    table = summary_table(result)
    assert "would create" in table and "created" not in table and "would link" in table


def test_the_attention_table_lists_failed_contacts_with_name_and_reason_up_to_a_cap():
    frame = pd.DataFrame({"contact_id": [5, 1, 2, 3], "outcome": ["failed", "created", "failed", "failed"],
                          "display_name": ["Eve E", "Ada A", "Bob B", "Cy C"],
                          "reason": ["no primary email", "new account", "contact is deceased", "x"]})
    table = attention_table(frame, max_rows=2)
    lines = table.splitlines()
    assert lines[0] == "3 contacts need attention:"
    assert lines[3:5] == ["         2  Bob B         contact is deceased", "         3  Cy C          x"]
    assert lines[-1] == "... and 1 more (log_attention_rows = 2)"
    assert "Ada A" not in table and "Eve E" not in table
    assert attention_table(frame[frame["outcome"] == "created"], 5) == "no contact needs attention"
