"""The approval gate, decided: when a run waits for an operator, what the operator is shown, and
what a rejected run reports. Pure (pandas, no Airflow, no I/O); pipeline/tasks.py puts it in an
Airflow human-in-the-loop task, and every DAG that creates accounts uses the same gate.

The operator sees what a dry run of the same plan reports (`report.summary_table` of the plan's
planned outcomes, with the dry-run labels), and a sample of contacts with what the audit log line
shows of them: contact id, planned outcome and username; never an email, a name or a reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from provisioning import outcomes, report
from provisioning.vocabulary import Action, ApprovalDecision, Outcome

#: Contacts listed on the approval screen (lowest ids first); the full plan is the plan task's XCom.
SAMPLE_ROWS = 20

#: The decisions after which nothing may be created.
REJECTIONS = (ApprovalDecision.REJECTED, ApprovalDecision.TIMED_OUT)


@dataclass(frozen=True)
class Gate:
    """Whether a run must wait for approval, and the numbers that decided it."""

    needed: bool
    to_create: int          # new accounts the plan would create (links are not counted)
    to_link: int
    threshold: int | None   # approval_threshold; None: no gate
    dry_run: bool

    def explain(self) -> str:
        """One log line saying why the run waits or goes on."""
        counts = f"{self.to_create} new account{'s' if self.to_create != 1 else ''} to create"
        if self.threshold is None:
            return f"approval: not needed ({counts}; no approval_threshold is set)"
        if self.dry_run:
            verdict = "would wait for approval" if self.to_create > self.threshold else "would not wait"
            return (f"approval: dry run, nobody is asked; a real run {verdict} ({counts}, approval_threshold "
                    f"{self.threshold})")
        if self.needed:
            return (f"approval: needed, {counts} is more than approval_threshold {self.threshold}; the run waits "
                    "for an operator before any account is created")
        return f"approval: not needed ({counts}, approval_threshold {self.threshold})"


def plan_frame(plan_rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(plan_rows, pd.DataFrame):
        return plan_rows
    return pd.DataFrame(plan_rows, columns=None if plan_rows else ["contact_id", "action", "outcome", "reason",
                                                                    "uf_id", "username"])


@dataclass
class PlanDigest:
    """What the gate and its screen need of a plan, gathered a chunk of it at a time (`add`, in contact_id
    order): the counts, and the first `sample_rows` contacts to be created or linked."""

    sample_rows: int = SAMPLE_ROWS
    to_create: int = 0
    to_link: int = 0
    planned: Counter = field(default_factory=Counter)   # planned outcomes, with the dry-run labels
    acting: pd.DataFrame | None = None                   # the first sample_rows of them, planned
    acting_count: int = 0

    def add(self, plan_rows: list[dict] | pd.DataFrame) -> PlanDigest:
        plan = plan_frame(plan_rows)
        actions = plan["action"].astype(str)
        self.to_create += int((actions == Action.CREATE).sum())
        self.to_link += int((actions == Action.LINK).sum())
        if not len(plan):
            return self
        planned = report.planned_outcomes(plan, dry_run=True)
        self.planned.update(report.outcome_names(planned))
        acting = planned[planned["contact_id"].isin(plan.loc[actions.isin([Action.CREATE, Action.LINK]),
                                                             "contact_id"])]
        self.acting_count += len(acting)
        if len(acting) and (self.acting is None or len(self.acting) < self.sample_rows):
            kept = acting if self.acting is None else pd.concat([self.acting, acting])
            self.acting = kept.sort_values("contact_id", kind="stable").head(self.sample_rows)
        return self


def digest(plan: list[dict] | pd.DataFrame | PlanDigest | Iterable[pd.DataFrame],
           sample_rows: int = SAMPLE_ROWS) -> PlanDigest:
    """A PlanDigest of the plan's rows, of its frame, or of its chunks (frames)."""
    if isinstance(plan, PlanDigest):
        return plan
    if isinstance(plan, (list, pd.DataFrame)):
        return PlanDigest(sample_rows).add(plan)
    found = PlanDigest(sample_rows)
    for chunk in plan:
        found.add(chunk)
    return found


def gate(plan_rows: list[dict] | PlanDigest, threshold: int | None, *, dry_run: bool) -> Gate:
    """A run waits when it would create more new accounts than `threshold`; a dry run never waits."""
    if isinstance(plan_rows, PlanDigest):
        to_create, to_link = plan_rows.to_create, plan_rows.to_link
    else:
        actions = plan_frame(plan_rows)["action"].astype(str)
        to_create = int((actions == Action.CREATE).sum())
        to_link = int((actions == Action.LINK).sum())
    needed = threshold is not None and not dry_run and to_create > threshold
    return Gate(needed=needed, to_create=to_create, to_link=to_link, threshold=threshold, dry_run=dry_run)


def subject(run_gate: Gate, dag_id: str) -> str:
    return f"{dag_id}: approve creating {run_gate.to_create} CMS accounts?"


def body(plan_rows: list[dict] | PlanDigest, run_gate: Gate, *, cms_label: str, timeout_minutes: int,
         deadline: str, approvers: list[str], plan_task: str, sample_rows: int = SAMPLE_ROWS) -> str:
    """The approval screen (Markdown): what the plan would do, what each answer does, who may answer."""
    found = digest(plan_rows, sample_rows)
    acting = found.acting if found.acting is not None else pd.DataFrame(columns=["contact_id", "outcome",
                                                                                 "username"])
    shown = min(sample_rows, found.acting_count)
    who = (", ".join(f"`{user}`" for user in approvers) if approvers
           else "any user allowed to answer this DAG's requests")
    return "\n".join([
        f"This run would create **{run_gate.to_create} new {cms_label} accounts** (and link "
        f"{run_gate.to_link} existing ones): more than `approval_threshold` ({run_gate.threshold}), so it "
        "waits for you before any account is created.",
        "",
        "- **Approve**: the accounts are created and linked as planned below.",
        "- **Reject**: nothing is created and no attempt is counted; every contact's outcome is "
        "`approval_rejected` and the contacts stay in their trigger groups and tags, so the next run "
        "plans them again. The run ends green.",
        f"- No answer by {deadline} (`approval_timeout_minutes`: {timeout_minutes}): rejected.",
        f"- Who may answer: {who}.",
        "",
        "Planned outcomes (what a dry run of this plan reports):",
        "",
        "```text",
        report.summary_of_counts(found.planned),
        "```",
        "",
        f"Contacts to be created or linked, lowest ids first ({shown} of {found.acting_count}):",
        "",
        "```text",
        report.outcome_table(acting, max_rows=sample_rows, columns=("contact_id", "outcome", "username"),
                             total=found.acting_count),
        "```",
        "",
        f"Every contact's planned outcome and reason: this run's plan file, whose address is the `{plan_task}` "
        "task's XCom `plan`.",
    ])


def result(run_gate: Gate, decision: ApprovalDecision, *, by: str | None = None,
           timeout_minutes: int | None = None) -> dict:
    """The gate's XCom: what finalize reads, and what an operator sees in the UI. JSON-safe."""
    return {"decision": str(decision), "by": by, "to_create": run_gate.to_create, "to_link": run_gate.to_link,
            "threshold": run_gate.threshold, "timeout_minutes": timeout_minutes}


def is_rejected(gate_result: dict | None) -> bool:
    """True when the gate said no (or nobody answered): then nothing may be created in this run."""
    return bool(gate_result) and gate_result.get("decision") in REJECTIONS


def decided_line(gate_result: dict) -> str:
    """The clear log line about the operator's answer."""
    decision, n = gate_result["decision"], gate_result["to_create"]
    if decision == ApprovalDecision.APPROVED:
        return f"approval: APPROVED by {gate_result['by']}; creating {n} new accounts as planned"
    if decision == ApprovalDecision.TIMED_OUT:
        return (f"approval: TIMED OUT after {gate_result['timeout_minutes']} minutes without an answer, so "
                f"REJECTED; none of the {n} planned accounts is created, no attempt is counted")
    if decision == ApprovalDecision.REJECTED:
        by = f" by {gate_result['by']}" if gate_result.get("by") else ""
        return (f"approval: REJECTED{by}; none of the {n} planned accounts is created, no attempt is "
                "counted")
    return f"approval: {decision}"


def rejected_outcomes(plan_rows: list[dict], gate_result: dict) -> pd.DataFrame:
    """Every contact of a rejected run: `approval_rejected`, its planned login kept, nothing done.

    Also the contacts the plan had settled (already linked, failed): the operator refused the run,
    so it writes nothing to CiviCRM for anyone (no activity, history or clean-up).
    """
    plan = plan_frame(plan_rows)
    labels = report.planned_outcomes(plan, dry_run=True).set_index("contact_id")
    reasons = []
    for row in plan.itertuples(index=False):
        label = labels.loc[row.contact_id]
        planned = f"{label['outcome']}, {label['reason']}" if label["reason"] else str(label["outcome"])
        reasons.append(outcomes.approval_rejected(gate_result["decision"], gate_result.get("by"),
                                                  gate_result.get("timeout_minutes"), planned))
    final = pd.DataFrame({
        "contact_id": plan["contact_id"].to_numpy(),
        "outcome": [Outcome.APPROVAL_REJECTED.value] * len(plan),
        "username": plan["username"].to_numpy(dtype=object),
        "uf_id": plan["uf_id"].to_numpy(dtype=object),
        "attempt": [None] * len(plan),
        "reason": reasons,
        "mail": [None] * len(plan),
    })
    return final.sort_values("contact_id", kind="stable").reset_index(drop=True)
