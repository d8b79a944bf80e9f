"""Every DAG parses without secrets or network; a bad settings file is that DAG's own import error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sandbox import local_airflow


def _bag(dags_folder=None):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(dags_folder or local_airflow.REPO / "dags"))


@pytest.fixture
def no_network(monkeypatch):
    """Parsing must not open a single connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("a DAG file opened a network connection at parse time")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_every_dag_parses(no_network, monkeypatch):
    monkeypatch.delenv("CMSUSER_SETTINGS", raising=False)  # the repository's default settings file
    bag = _bag()
    assert bag.import_errors == {}
    dag = bag.get_dag("cmsuser_nightly")
    assert dag is not None
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert set(dag.params) == {"dry_run", "limit"}
    # the repository's settings set no approval_threshold: no gate task
    assert {t.task_id: t.upstream_task_ids for t in dag.tasks} == {
        "preflight": set(), "password_resets": {"preflight"}, "extract": {"preflight"},
        # resets end before the plan, so before any account is created (never two mails to one contact)
        "plan": {"preflight", "extract", "password_resets"},
        "create_accounts": {"preflight", "plan"}, "finalize": {"create_accounts"}}
    assert list(dag.get_task("preflight").op_args) == [False]  # so a run whose settings now ask for a gate stops


@pytest.mark.parametrize("dag_id", ["cmsuser_nightly", "cmsuser_realtime"])
def test_an_approval_threshold_puts_the_gate_between_plan_and_creates(dag_id, tmp_path, monkeypatch):
    custom = tmp_path / "cmsuser.yaml"
    custom.write_text("trigger_tags: [needs_login]\napproval_threshold: 0\n")
    monkeypatch.setenv("CMSUSER_SETTINGS", str(custom))
    dag = _bag().get_dag(dag_id)
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream["approval"] == {"plan"}
    assert upstream["create_accounts"] == {"preflight", "plan", "approval"}
    assert list(dag.get_task("preflight").op_args) == [True]


def test_the_realtime_dag_runs_the_same_steps_on_its_watchers_events(no_network, monkeypatch):
    from civicrm_hooks.triggers import TriggerJoinsWatcher

    monkeypatch.delenv("CMSUSER_SETTINGS", raising=False)
    bag = _bag()
    nightly, realtime = bag.get_dag("cmsuser_nightly"), bag.get_dag("cmsuser_realtime")
    assert {t.task_id: t.upstream_task_ids for t in realtime.tasks} == {
        t.task_id: t.upstream_task_ids for t in nightly.tasks}
    assert set(realtime.params) == {"contact_ids", "dry_run", "limit"}
    assert realtime.params["contact_ids"] == []
    assert realtime.max_active_runs > 1  # a run waiting for approval does not hold up the next contacts
    [asset] = realtime.timetable.asset_condition.objects if hasattr(realtime.timetable.asset_condition, "objects") \
        else [realtime.timetable.asset_condition]
    [watcher] = asset.watchers
    trigger = watcher.trigger
    assert isinstance(trigger, TriggerJoinsWatcher)
    # the repository's settings: trigger and reset groups and tags, as entered (resolved by the watcher)
    assert trigger.groups == ["new_members", "volunteers_smart", "password_reset"]
    assert trigger.tags == ["needs_login", "reset_password"]
    assert trigger.poll_interval == 5
    classpath, kwargs = trigger.serialize()
    assert classpath == "civicrm_hooks.triggers.TriggerJoinsWatcher"
    assert TriggerJoinsWatcher(**kwargs).serialize() == (classpath, kwargs)


def test_create_task_is_retried_in_the_cms_pool(monkeypatch):
    monkeypatch.delenv("CMSUSER_SETTINGS", raising=False)
    task = _bag().get_dag("cmsuser_nightly").get_task("create_accounts")
    assert task.pool == "cmsuser_cms"
    assert task.retries == 3
    assert task.retry_exponential_backoff
    assert task.map_index_template == "{{ batch_label }}"
    assert _bag().get_dag("cmsuser_nightly").get_task("finalize").trigger_rule == "all_done"


def test_bad_settings_file_names_the_field(tmp_path, monkeypatch):
    bad = tmp_path / "cmsuser.yaml"
    bad.write_text("trigger_groups: [members]\nmax_attempts: zero\n")
    monkeypatch.setenv("CMSUSER_SETTINGS", str(bad))
    errors = _bag().import_errors
    assert sorted(Path(f).name for f in errors) == ["cmsuser_nightly.py", "cmsuser_realtime.py"]
    for message in errors.values():
        assert "max_attempts" in message
        assert str(bad) in message


def test_settings_schedule_reaches_the_dag(tmp_path, monkeypatch):
    custom = tmp_path / "cmsuser.yaml"
    custom.write_text("trigger_tags: [needs_login]\nschedule: '30 3 * * *'\ntimezone: Europe/Berlin\n")
    monkeypatch.setenv("CMSUSER_SETTINGS", str(custom))
    dag = _bag().get_dag("cmsuser_nightly")
    assert dag.timetable.expression == "30 3 * * *"
    assert "Europe/Berlin" in str(dag.timetable.timezone)


def test_every_task_has_a_timeout_from_the_settings_and_retries_transient_errors(tmp_path, monkeypatch):
    custom = tmp_path / "cmsuser.yaml"
    custom.write_text("trigger_tags: [needs_login]\ntask_timeout_minutes: {extract: 5}\napproval_threshold: 100\n")
    monkeypatch.setenv("CMSUSER_SETTINGS", str(custom))
    dag = _bag().get_dag("cmsuser_nightly")
    minutes = {t.task_id: t.execution_timeout.total_seconds() / 60 for t in dag.tasks}
    assert minutes == {"preflight": 10, "password_resets": 60, "extract": 5, "plan": 30,
                       "approval": 30,  # the approval gate reads the plan: the plan's timeout
                       "create_accounts": 120, "finalize": 60}
    # extract and plan read CiviCRM too: a blip there retries, it does not end the night
    assert {t.task_id: t.retries for t in dag.tasks} == {"preflight": 2, "password_resets": 3, "extract": 2,
                                                         "plan": 2, "approval": 2, "create_accounts": 3,
                                                         "finalize": 2}


def test_no_task_logs_its_return_value(monkeypatch):
    monkeypatch.delenv("CMSUSER_SETTINGS", raising=False)
    dag = _bag().get_dag("cmsuser_nightly")
    def shown(task):  # a mapped task keeps its operator's arguments aside until it is expanded
        kwargs = getattr(task, "partial_kwargs", None)
        return kwargs.get("show_return_value_in_logs", True) if kwargs is not None else task.show_return_value_in_logs

    assert {t.task_id: shown(t) for t in dag.tasks} == {
        t.task_id: False for t in dag.tasks}  # extract's value is every member's name and email


def test_a_task_that_hits_its_timeout_says_which_setting_to_raise(caplog, monkeypatch):
    from datetime import timedelta
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowTaskTimeout

    from pipeline import tasks

    ti = SimpleNamespace(task_id="finalize", task=SimpleNamespace(execution_timeout=timedelta(minutes=7)))
    monkeypatch.setattr(tasks, "get_current_context", lambda: {"ti": ti})

    @tasks.stops_cleanly
    def slow():
        raise AirflowTaskTimeout()

    with pytest.raises(AirflowTaskTimeout):
        slow()
    (line,) = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert line.startswith("finalize did not finish within 7 minutes: raise task_timeout_minutes.finalize")


def test_parsing_the_dags_loads_no_pandas():
    """Every task process parses its DAG file first: pandas (0.5-2 s to load here) is for the steps that plan
    and finalize, so preflight, extract and each create batch start without it; Airflow's own start-up (which
    reads our provider's connection types) must not load it either."""
    import subprocess
    import sys

    probe = ("import sys; import airflow.sdk; sys.path[:0] = ['plugins', 'dags']; "
             "import cmsuser_nightly, cmsuser_realtime; "
             "print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", probe], cwd=local_airflow.REPO, capture_output=True, text=True,
                           timeout=120, check=True).stdout.strip().splitlines()[-1]
    assert found == "[]"


def test_airflows_plugin_manager_runs_none_of_the_projects_modules():
    """Airflow looks for plugins in the plugins folder by executing every .py file in it, in every process
    (a task process too): the folder's .airflowignore keeps it from running ours (none is a plugin)."""
    import sys

    from airflow._shared.module_loading import find_path_from_directory
    from airflow.plugins_manager import _get_plugins

    plugins = local_airflow.REPO / "plugins"
    assert list(find_path_from_directory(str(plugins), ".airflowignore", "glob")) == []
    assert len(list(plugins.rglob("*.py"))) > 30  # the folder does hold the project's modules
    _get_plugins()
    stray = [name for name in ("batch", "hook", "backend", "steps", "queries") if name in sys.modules
             and str(plugins) in str(getattr(sys.modules[name], "__file__", ""))]
    assert stray == []
