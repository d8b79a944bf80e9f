"""Plain-text tables for the task log: the outcome summary and a per-contact listing."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from provisioning.outcomes import DRY_RUN_LABELS, OUTCOME_ORDER, Outcome
from provisioning.plan import json_safe_records

#: Columns of a create result (and of planned_outcomes), one row per contact.
RESULT_COLUMNS = ["contact_id", "outcome", "reason", "uf_id", "username", "mail"]


def summary_table(outcomes: pd.DataFrame) -> str:
    """Count per outcome, every known outcome listed (also at 0) in a fixed order, plus the total.

    A dry run's outcomes carry the dry-run labels ("would create"), and are listed by them.
    """
    return summary_of_counts(outcome_names(outcomes).value_counts().to_dict())


def outcome_names(outcomes: pd.DataFrame) -> pd.Series:
    """Each row's outcome as text ("unknown" where missing): what summary tables count."""
    return outcomes["outcome"].astype(object).where(outcomes["outcome"].notna(), "unknown").map(str)


def summary_of_counts(counts: Mapping[str, int]) -> str:
    """summary_table from the counts per outcome (gathered chunk by chunk over a run)."""
    counts = {str(name): int(count) for name, count in counts.items() if count}
    total = sum(counts.values())
    dry = bool(total) and set(counts) <= set(DRY_RUN_LABELS.values())
    names = [DRY_RUN_LABELS[o] if dry else o.value for o in OUTCOME_ORDER]
    names += sorted(name for name in counts if name not in names)
    rows = [(name, str(counts.get(name, 0))) for name in names]
    return _text_table(("outcome", "count"), rows, right_aligned={1}, footer=("total", str(total)))


def outcome_table(outcomes: pd.DataFrame, max_rows: int = 50,
                  columns: tuple[str, ...] = ("contact_id", "outcome", "username", "reason"),
                  total: int | None = None) -> str:
    """contact_id, outcome, username and reason (or `columns`) per contact, at most max_rows of them;
    `total`: how many there are in all, when `outcomes` holds only the first of them."""
    shown = outcomes.sort_values("contact_id", kind="stable").head(max_rows) if max_rows >= 0 else outcomes
    rows = [tuple(_cell(row.get(column)) for column in columns) for row in shown.to_dict("records")]
    table = _text_table(columns, rows, right_aligned={0})
    hidden = (len(outcomes) if total is None else total) - len(shown)
    if hidden > 0:
        table += f"\n... and {hidden} more contact{'s' if hidden != 1 else ''}"
    return table


def needing_attention(outcomes: pd.DataFrame) -> pd.DataFrame:
    """The contacts staff should look at (failed ones, or would-fail in a dry run), in contact_id order."""
    failed_names = {Outcome.FAILED.value, DRY_RUN_LABELS[Outcome.FAILED]}
    return outcomes[outcomes["outcome"].astype(str).isin(failed_names)].sort_values("contact_id", kind="stable")


def attention_table(outcomes: pd.DataFrame, max_rows: int, *, failed: int | None = None) -> str:
    """The contacts staff should look at (failed ones): id, display name and reason, at most max_rows.

    Capped, so no log grows with the run; the full per-contact table is the run's outcomes. `failed`: how
    many need attention in all, when `outcomes` holds only the first of them (a run finalized in chunks).
    """
    rows_failed = needing_attention(outcomes)
    count = len(rows_failed) if failed is None else failed
    if not count:
        return "no contact needs attention"
    shown = rows_failed.head(max(0, max_rows))
    names = shown["display_name"] if "display_name" in shown.columns else pd.Series([""] * len(shown))
    rows = [(_cell(cid), _cell(name), _cell(reason))
            for cid, name, reason in zip(shown["contact_id"], names, shown["reason"], strict=True)]
    table = _text_table(("contact_id", "display_name", "reason"), rows, right_aligned={0})
    hidden = count - len(shown)
    more = f"\n... and {hidden} more (log_attention_rows = {max_rows})" if hidden > 0 else ""
    return f"{count} contact{'s' if count != 1 else ''} need attention:\n{table}{more}"


def where_outcomes_are(*, dry_run: bool, keep_hours: float | None = None) -> str:
    """Where a run's per-contact table is; `keep_hours` None: the run is unfinished (its files wait for retries)."""
    what = "planned outcome" if dry_run else "outcome"
    kept = ("deleted as this task ends (keep_run_files_hours is 0)" if keep_hours == 0
            else f"kept {keep_hours:g} hours after the run (keep_run_files_hours)" if keep_hours
            else "kept for this run's retries (at most 7 days)")
    return (f"Every contact's {what} (reason, login, password email) is in this run's outcomes file, {kept}: "
            "its address is the finalize task's XCom 'outcomes' (Airflow UI > the run > finalize > XCom, or GET "
            "/api/v2/dags/<dag>/dagRuns/<run>/taskInstances/finalize/xcomEntries/outcomes). Each contact's "
            "outcome is also one line of the finalize log and an activity in CiviCRM.")


def planned_outcomes(plan: pd.DataFrame, *, dry_run: bool = False) -> pd.DataFrame:
    """What a dry run would report: the plan's outcomes in the shape create_accounts returns.

    With `dry_run` the outcomes say what would happen ("would create"), never "created".
    """
    names = plan["outcome"].to_numpy(dtype=object)
    if dry_run:
        names = [DRY_RUN_LABELS.get(Outcome(name), name) if name else name for name in names]
    result = pd.DataFrame(
        {
            "contact_id": plan["contact_id"].to_numpy(),
            "outcome": names,
            "reason": plan["reason"].to_numpy(dtype=object),
            "uf_id": plan["uf_id"].to_numpy(dtype=object),
            "username": plan["username"].to_numpy(dtype=object),
            "mail": [None] * len(plan),
            "display_name": plan["display_name"].to_numpy(dtype=object) if "display_name" in plan.columns
            else [""] * len(plan),
        },
        columns=[*RESULT_COLUMNS, "display_name"],
    )
    return result.sort_values("contact_id", kind="stable").reset_index(drop=True)


def to_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-safe dicts, for XCom: plain ints and strings, None for missing values."""
    return json_safe_records(frame)


def _cell(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    text = str(value)
    # One contact per line, whatever the reason text contains.
    return text.replace("\r", " ").replace("\n", " ")


def _text_table(
    header: tuple[str, ...],
    rows: list[tuple[str, ...]],
    *,
    right_aligned: set[int],
    footer: tuple[str, ...] | None = None,
) -> str:
    every_row = [header, *rows, *([footer] if footer else [])]
    widths = [max(len(row[i]) for row in every_row) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [line(header), rule, *(line(row) for row in rows)]
    if footer:
        lines += [rule, line(footer)]
    return "\n".join(lines)
