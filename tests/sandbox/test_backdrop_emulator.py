"""The Backdrop emulator itself: the emulated bee refuses what it cannot do, seeds, records calls, and
injects faults (a slow answer, a process killed mid-call, a site that does not bootstrap)."""

from __future__ import annotations

import json
import subprocess

import pytest

from cms_operators.backdrop.backend import BackdropBackend
from cms_operators.backdrop.hook import BeeHook, program_text
from cms_operators.backend import CmsConfigError, CmsUnavailable, NewUser
from sandbox import emulators, sites
from sandbox.backdrop import testing

backdrop = testing.backdrop  # fixture


def _bee(site, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([site.bee_path, f"--root={site.root}", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_bee_refuses_other_commands_and_php_it_cannot_run_like_bee_does(backdrop):
    users = _bee(backdrop, "users")
    assert users.returncode == 0 and "only `eval`" in users.stdout and "@@cmsuser" not in users.stdout
    php = _bee(backdrop, "eval", "echo json_encode(db_query('SELECT 1'));")
    assert php.returncode == 0 and "cannot run PHP" in php.stdout


def test_an_operation_the_program_does_not_declare_is_refused(backdrop, monkeypatch):
    from cms_operators.backdrop import hook as hook_module

    monkeypatch.setattr(hook_module, "program_text", lambda: program_text().replace("// operation: facts\n", ""))
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", backdrop.connection())
    with pytest.raises(CmsConfigError) as caught:
        BeeHook("cms_default").call("facts")
    assert caught.value.code == "unknown_operation"


def test_seed_calls_and_a_slow_answer_that_times_out(backdrop, monkeypatch):
    backdrop.seed({"users": [{"name": "larry", "mail": "larry@example.org", "roles": ["member"]}]})
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", backdrop.connection(timeout=1))
    backend = BackdropBackend("cms_default")
    assert [u.username for u in backend.find_users(["LARRY@example.org"], [])] == ["larry"]
    backdrop.inject("find_users", delay=2)
    with pytest.raises(CmsUnavailable) as caught:
        backend.find_users(["larry@example.org"], [])
    assert caught.value.code == "connection_lost"  # the call was given up: its process killed
    assert [c["operation"] for c in backdrop.calls] == ["find_users", "find_users"]
    assert all("larry" not in json.dumps(c["argv"]) for c in backdrop.calls)


def test_a_kill_mid_call_keeps_what_was_saved(backdrop, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", backdrop.connection())
    backend = BackdropBackend("cms_default")
    backdrop.inject("create_users", kill_after_items=1)
    with pytest.raises(CmsUnavailable):
        backend.create_users([NewUser(username=f"u{i}", email=f"u{i}@example.org") for i in range(3)])
    assert [u["name"] for u in backdrop.users] == ["admin", "u0"]
    assert backdrop.pending_faults == 0


def test_a_site_that_does_not_bootstrap_is_a_config_error(backdrop, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", backdrop.connection())
    backdrop.inject(exit_code=0, no_answer=True)
    with pytest.raises(CmsConfigError) as caught:
        BeeHook("cms_default").call("facts")
    assert caught.value.code == "no_answer"


def test_the_sandbox_starts_it_from_the_demo_seed():
    assert emulators.package("backdrop").__name__ == "sandbox.backdrop"
    with sites.started_sites(cms_type="backdrop") as started:
        assert [u["name"] for u in started.cms.users] == ["admin", "larry", "jane.doe", "john.smith"]
        cms = json.loads(started.connection_env["AIRFLOW_CONN_CMS_DEFAULT"])
        assert cms["conn_type"] == "backdrop" and not cms["host"] and cms["extra"]["site_root"] == str(started.cms.root)
