"""The nightly DAG on Airflow's real api-server, scheduler and dag-processor (PostgreSQL, LocalExecutor).

What dag.test() cannot show: retries scheduled by the real scheduler, task processes talking to
the Execution API, logs and XComs as the REST API serves them, and an operator's Clear.

The story (one run, shared by both tests): the CMS answers every create with 503, so each
create_accounts batch fails after its 4 tries and finalize reports the batches that did not
finish; the CMS recovers; the operator clears the failed batches and their downstream as the
UI's Clear button does; the same run then succeeds. The auditor then reads every log of every try.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil
import pytest
import yaml

from sandbox.civicrm import CiviCRMEmulator
from sandbox.real_airflow import DAG_ID, RealAirflow, postgres_available
from sandbox.sites import demo_seed, started_sites
from sandbox.wordpress import WordPressEmulator
from tests.conftest import need_services
from tests.dags.conftest import BASE_SETTINGS, triggered_contacts

pytestmark = [pytest.mark.real_airflow, pytest.mark.slow]

CREATE = "create_accounts"
TRIES = 4  # retries=3 on create_accounts
CMS_FAULTS = 200  # more 503s than all tries of all batches can use
CLIENT_TIMEOUT = 10  # seconds; the CMS connection's extra.timeout in this tier
DEMO = demo_seed()


@dataclass
class Stack:
    civicrm: CiviCRMEmulator
    wordpress: WordPressEmulator
    airflow: RealAirflow
    secrets: dict[str, str]
    started: float


@dataclass
class Story:
    """What the operator saw, step by step, on one run."""

    run_id: str
    first_state: str
    first_tis: list[dict]
    first_finalize_log: str
    accounts_after_failure: int
    batches: dict[int, list[dict]] = field(default_factory=dict)  # map index -> plan rows
    cleared: list[dict] = field(default_factory=list)
    final_state: str | None = None
    final_tis: list[dict] = field(default_factory=list)
    outcomes: dict[int, dict] = field(default_factory=dict)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_services("real-Airflow", postgres_available())
    started = time.monotonic()
    home = tmp_path_factory.mktemp("real_airflow")
    settings_file = home / "cmsuser.yaml"
    settings_file.write_text(yaml.safe_dump({**BASE_SETTINGS, "retry_delay_seconds": 1, "batch_size": 5}))
    with started_sites(DEMO) as sites:
        civicrm, wordpress, creds = sites.civicrm, sites.cms, sites.secrets
        env = {**sites.connection_env, "CMSUSER_SETTINGS": str(settings_file)}
        cms = json.loads(env["AIRFLOW_CONN_CMS_DEFAULT"])
        cms.setdefault("extra", {})["timeout"] = CLIENT_TIMEOUT  # keeps the wait after a killed try short
        env["AIRFLOW_CONN_CMS_DEFAULT"] = json.dumps(cms)
        airflow = RealAirflow(env, home=home / "airflow_home", parallelism=2)
        airflow.start()
        try:
            yield Stack(civicrm, wordpress, airflow, creds, started)
        finally:
            airflow.stop()
            print(f"\nreal-Airflow tier: startup {airflow.startup_seconds:.1f}s, "
                  f"wall time {time.monotonic() - started:.1f}s", flush=True)


@pytest.fixture(scope="module")
def story(stack) -> Story:
    airflow, wordpress = stack.airflow, stack.wordpress
    # Every account create fails (the contacts' addresses are all @example.org); pre-flight's own
    # role check, made with the API user's address, still gets through, so the run reaches the batches.
    wordpress.inject(method="POST", path="/wp/v2/users", status=503, times=CMS_FAULTS, body_contains="@example.org")
    run_id = airflow.trigger(DAG_ID)
    first_state = airflow.wait(DAG_ID, run_id, timeout=300)
    first_tis = airflow.task_instances(DAG_ID, run_id)
    story = Story(run_id=run_id, first_state=first_state, first_tis=first_tis,
                  first_finalize_log=airflow.logs(DAG_ID, run_id, "finalize", -1, 1),
                  accounts_after_failure=len(wordpress.users))
    from pipeline import run_files

    for descriptor in airflow.xcom(DAG_ID, run_id, "plan"):
        story.batches[descriptor["index"]] = run_files.read(descriptor["rows"])
    failed = [ti["map_index"] for ti in first_tis if ti["task_id"] == CREATE and ti["state"] == "failed"]
    if first_state != "failed" or not failed:
        return story  # nothing for the operator to clear; the test says what went wrong

    wordpress.clear_faults()  # the CMS is healthy again
    # One Clear for all failed batches: cleared one by one, finalize could run between two clears.
    story.cleared = airflow.clear(DAG_ID, run_id, CREATE, map_index=failed, downstream=True)
    story.final_state = airflow.wait(DAG_ID, run_id, timeout=300)
    story.final_tis = airflow.task_instances(DAG_ID, run_id)
    rows = airflow.xcom(DAG_ID, run_id, "finalize", key="outcomes") or []
    story.outcomes = {row["contact_id"]: row for row in rows}
    return story


def test_operator_clears_failed_batches_and_the_run_recovers(stack, story):
    # --- the CMS is down: every batch used its 4 tries, finalize ran and said so, the run is red
    assert story.first_state == "failed"
    creates = [ti for ti in story.first_tis if ti["task_id"] == CREATE]
    assert creates, "create_accounts never ran"
    assert {ti["state"] for ti in creates} == {"failed"}
    assert all(ti["try_number"] == TRIES for ti in creates), [(t["map_index"], t["try_number"]) for t in creates]
    (finalize,) = [ti for ti in story.first_tis if ti["task_id"] == "finalize"]
    assert finalize["state"] == "failed"  # it ran (all_done) and raised for the unfinished batches
    assert "did not finish" in story.first_finalize_log
    assert re.search(r"^\s*total\s+\d+\s*$", story.first_finalize_log, re.M), "no summary table in finalize's log"
    assert re.search(r"^\s*deferred\s+[1-9]", story.first_finalize_log, re.M), "no deferred contact in the summary"
    assert story.accounts_after_failure == len(DEMO["wordpress"]["users"]) + 1  # seed + API user: none created

    # --- the operator's Clear took the failed batches and finalize, and the run went green
    cleared = {(ti["task_id"], ti["map_index"]) for ti in story.cleared}
    assert {(CREATE, ti["map_index"]) for ti in creates} | {("finalize", -1)} <= cleared
    assert story.final_state == "success"
    assert {ti["state"] for ti in story.final_tis} == {"success"}
    assert all(ti["try_number"] == TRIES + 1 for ti in story.final_tis if ti["task_id"] == CREATE)

    # --- each contact of the failed batches got its account exactly once, and its link
    wordpress, civicrm = stack.wordpress, stack.civicrm
    batch_rows = [row for rows in story.batches.values() for row in rows]
    to_create = [row for row in batch_rows if row["action"] == "create"]
    assert to_create, "the failed batches had nothing to create"
    created_posts = Counter(
        str((call.body or {}).get("email", "")).strip().lower() for call in wordpress.calls
        if call.method == "POST" and call.path.endswith("/wp/v2/users") and call.status == 201)
    links = {r["contact_id"]: r for r in civicrm.table("UFMatch")}
    for row in to_create:
        outcome = story.outcomes[row["contact_id"]]
        assert outcome["outcome"] == "created", outcome
        assert created_posts[row["email"].strip().lower()] == 1, (row["contact_id"], created_posts)
        (account,) = [u for u in wordpress.users if u["email"].lower() == row["email"].lower()]
        assert links[row["contact_id"]]["uf_id"] == account["id"] == outcome["uf_id"]
    for row in batch_rows:
        if row["action"] == "link":
            assert story.outcomes[row["contact_id"]]["outcome"] == "linked_existing"
            assert links[row["contact_id"]]["uf_id"] == row["uf_id"]

    emails = Counter(u["email"].lower() for u in wordpress.users)
    assert [e for e, n in emails.items() if n > 1] == []
    ufmatch = civicrm.table("UFMatch")
    assert [c for c, n in Counter(r["contact_id"] for r in ufmatch).items() if n > 1] == []
    assert [u for u, n in Counter((r["domain_id"], r["uf_id"]) for r in ufmatch).items() if n > 1] == []


def test_auditor_finds_every_contact_and_no_secret(stack, story):
    airflow = stack.airflow
    logs = airflow.all_logs(DAG_ID, story.run_id)
    tasks_logged = {task for task, _, _ in logs}
    assert {"preflight", "extract", "plan", CREATE, "finalize"} <= tasks_logged
    # every try of every batch is readable: the 4 failed ones and the one after the Clear
    for map_index in story.batches:
        assert {t for task, m, t in logs if task == CREATE and m == map_index} >= set(range(1, TRIES + 1))
    assert all(text.strip() for text in logs.values()), [k for k, v in logs.items() if not v.strip()]

    # finalize ran twice: red after the failed batches, green after the Clear; each audits every contact
    finalize_tries = sorted(t for task, _, t in logs if task == "finalize")
    assert finalize_tries == [1, 2]
    expected = triggered_contacts(DEMO["civicrm"])
    for try_number in finalize_tries:
        log = logs[("finalize", -1, try_number)]
        audited = {int(m) for m in re.findall(r"\bcontact=(\d+) outcome=[a-z_]+", log)}
        assert audited == expected, (try_number, sorted(expected - audited), sorted(audited - expected))
        # ids and outcomes, not the members' logins (mostly their names), one line per contact
        logins = {row["username"] for row in story.outcomes.values() if row.get("username")}
        assert logins and [login for login in logins if login in log] == [], try_number

    creds = stack.secrets
    forbidden = {
        "CiviCRM API key": creds["api_key"],
        "CiviCRM site key": creds["site_key"],
        "WordPress application password": creds["app_password"],
        "WordPress Basic auth header": base64.b64encode(f"admin:{creds['app_password']}".encode()).decode(),
    }
    places = {f"log {task}[{m}] try {t}": text for (task, m, t), text in logs.items()}
    xcoms = airflow.xcoms(DAG_ID, story.run_id)
    assert {x["task_id"] for x in xcoms} >= {"preflight", "extract", "plan", "finalize"}
    places |= {f"XCom {x['task_id']}[{x['map_index']}] {x['key']}": json.dumps(x["value"], default=str)
               for x in xcoms}
    rendered = airflow.rendered_fields(DAG_ID, story.run_id)
    assert rendered, "no task instance reported rendered fields"
    places |= {f"rendered fields {task}[{m}]": json.dumps(fields, default=str)
               for (task, m), fields in rendered.items()}
    leaks = [f"{what} in {where}" for where, text in places.items() for what, value in forbidden.items()
             if value in text]
    assert leaks == []



# ----------------------------------------------------------------------------------- a killed worker

KILLED = [{"id": 200 + i, "first_name": "Kill", "last_name": f"Test{i}", "email": f"kill{i}@example.net"}
          for i in range(5)]


def _client_of(port: int) -> psutil.Process:
    """The process holding a TCP connection to `port` on loopback (our own server side excluded)."""
    me = os.getpid()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == port and conn.pid and conn.pid != me:
            return psutil.Process(conn.pid)
    raise AssertionError(f"no process is connected to port {port}")


def test_a_batch_killed_half_way_converges_with_no_duplicate_no_orphan_and_one_mail_each(stack, story):
    """SIGKILL the batch's task process while its third create is in flight (two accounts made, no
    link written yet); Airflow retries it; then an operator clears it once more for good measure."""
    airflow, wordpress, civicrm = stack.airflow, stack.wordpress, stack.civicrm
    civicrm.seed({"contacts": KILLED,
                  "group_contacts": [{"group_id": 5, "contact_id": c["id"], "status": "Added"} for c in KILLED]})
    # the third create hangs long enough to be killed mid-request, and is stored by the CMS afterwards
    wordpress.inject(method="POST", path="/wp/v2/users", status=None, delay=CLIENT_TIMEOUT - 2,
                     body_contains="kill2@example.net")
    run_id = airflow.trigger(DAG_ID)
    port = int(wordpress.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 180

    def third_create_in_flight() -> bool:  # kill1 stored, and a create call not answered yet
        made = {u["email"] for u in wordpress.users}
        return "kill1@example.net" in made and any(
            c.method == "POST" and c.path.endswith("/wp/v2/users") and c.status is None for c in wordpress.calls)

    while not third_create_in_flight():
        assert time.monotonic() < deadline, "the batch never reached its third create"
        time.sleep(0.05)
    victim = _client_of(port)
    made_before_kill = [u for u in wordpress.users if u["email"].startswith("kill")]
    linked_before_kill = [r for r in civicrm.table("UFMatch") if r["contact_id"] >= 200]
    victim.send_signal(signal.SIGKILL)

    state = airflow.wait(DAG_ID, run_id, timeout=300)
    tries = airflow.tries(DAG_ID, run_id, CREATE, 0)
    cleared = airflow.clear(DAG_ID, run_id, CREATE, map_index=[0], downstream=True)
    final_state = airflow.wait(DAG_ID, run_id, timeout=300)
    rows = airflow.xcom(DAG_ID, run_id, "finalize", key="outcomes")
    outcomes = {row["contact_id"]: row for row in rows}

    assert [u["email"] for u in made_before_kill] == ["kill0@example.net", "kill1@example.net"]
    assert linked_before_kill == []  # killed between the creates and the link write
    assert state == "success" and final_state == "success"
    assert len(tries) >= 2, tries  # the killed try and Airflow's retry
    assert {(ti["task_id"], ti["map_index"]) for ti in cleared} >= {(CREATE, 0), ("finalize", -1)}
    links = {r["contact_id"]: r for r in civicrm.table("UFMatch")}
    for contact in KILLED:
        (account,) = [u for u in wordpress.users if u["email"] == contact["email"]]  # no duplicate
        assert links[contact["id"]]["uf_id"] == account["id"]  # no orphan
        assert outcomes[contact["id"]]["outcome"] == "created", outcomes[contact["id"]]
        assert sum(1 for m in wordpress.mails if m["user_login"] == account["username"]) == 1
    assert len(rows) == len(outcomes)  # one outcome per contact
