"""Run Airflow's real api-server, scheduler and dag-processor (and, with `triggerer=True`, the triggerer
that runs asset watchers) as subprocesses, on PostgreSQL.

The in-process `dag.test()` harness (local_airflow.py) skips what only the real components do:
the executor's task subprocesses talking to the Execution API, retries scheduled by the
scheduler, logs served by the api-server, and clearing a task as the UI's Clear button does.
This harness runs all of that on a throwaway database and AIRFLOW_HOME and talks to it only
through the public REST API, as an operator or auditor would.

    with RealAirflow(connection_env | {"CMSUSER_SETTINGS": path}) as airflow:
        run_id = airflow.trigger("cmsuser_nightly")
        state = airflow.wait("cmsuser_nightly", run_id)
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "cmsuser_nightly"
CMS_POOL = "cmsuser_cms"  # the pool create_accounts runs in (pipeline.tasks.CMS_POOL)

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
DEFAULT_DATABASE = "cmsuser_airflow_test"
ADMIN_USER = "admin"
TERMINAL_RUN_STATES = {"success", "failed"}
FINISHED_TASK_STATES = {"success", "failed", "skipped", "upstream_failed", "removed"}
COMPONENTS = ("api-server", "scheduler", "dag-processor")
TRIGGERER = "triggerer"  # opt-in: asset watchers (the near-real-time DAG) run only there


class AirflowHarnessError(RuntimeError):
    """The real Airflow stack did not start or did not answer; the message says where to look."""


def postgres_available(host: str = PG_HOST, port: int = PG_PORT, user: str = PG_USER) -> str | None:
    """None when PostgreSQL accepts a connection, else why not (for a skip or fail message)."""
    import psycopg2

    try:
        psycopg2.connect(host=host, port=port, user=user, dbname="postgres", connect_timeout=3).close()
    except psycopg2.Error as exc:
        return f"PostgreSQL at {host}:{port} (user {user}) is not reachable: {' '.join(str(exc).split())}"
    return None


REDIS_URL = os.environ.get("CMSUSER_REDIS_URL", "redis://127.0.0.1:6379")
CELERY_REDIS_DB = 11  # this harness's own Redis database, emptied at each start


def redis_available(url: str = REDIS_URL) -> str | None:
    """None when Redis answers a PING, else why not (for a skip or fail message)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        return f"Redis at {url} is not reachable: {exc}"
    return None


def worker_hostname() -> str:
    """`[core] hostname_callable` of the Celery tier: each worker's name (CMSUSER_WORKER_NAME), so a task
    instance shows which worker ran it even though both run on this one machine."""
    return os.environ.get("CMSUSER_WORKER_NAME") or socket.getfqdn()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compile_code(*folders: Path) -> None:
    """Write the bytecode of the project's modules, as a deployment's install does (pip compiles what it
    installs; the Dockerfile compiles plugins/ and dags/). Where the environment forbids Python to write
    bytecode itself (PYTHONDONTWRITEBYTECODE, set on this machine), every task process would otherwise compile
    each of our modules it imports from source: about 60 ms of CPU a task. Only files changed since are
    compiled again; a folder we may not write to is left as it is."""
    for folder in folders:
        compileall.compile_dir(folder, quiet=2)


def _fresh_database(name: str) -> None:
    """Drop and recreate the metadata database, so no run or pool of an earlier session is left."""
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            # A crashed earlier session may still hold connections, which would block the drop.
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


# Airflow's own defaults for what the stack above polls faster (so tests do not wait): what a deployment runs
# with. Benchmarks pass these, so the CPU they charge to the pipeline is a deployment's, not the tests' haste.
AIRFLOW_DEFAULT_TIMINGS = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "5",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "300",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "10",
}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log file)"


def _log_text(content) -> str:
    """One readable text from the log endpoint's JSON content (structured entries or plain strings)."""
    out = []
    for entry in content or []:
        if isinstance(entry, str):
            out.append(entry)
            continue
        entry = dict(entry)
        head = " ".join(str(entry.pop(k)) for k in ("timestamp", "level", "event") if entry.get(k) is not None)
        # Keep every other field too (logger, error_detail, ...): a secret could hide in any of them.
        rest = " ".join(f"{k}={json.dumps(v, default=str, ensure_ascii=False)}" for k, v in entry.items())
        # On a line of their own, so a multi-line event (a table) keeps its last line intact.
        out.append(f"{head}\n    {rest}" if rest else head)
    return "\n".join(out)


class RealAirflow:
    """Airflow's long-running components (three, or four with the triggerer) on a fresh PostgreSQL database,
    driven over REST."""

    def __init__(self, env: dict[str, str], *, dags_folder: Path = REPO / "dags", parallelism: int = 2,
                 dag_ids: tuple[str, ...] = (DAG_ID,), home: Path | None = None,
                 database: str = DEFAULT_DATABASE, pool_slots: int = 4, triggerer: bool = False,
                 executor: str = "LocalExecutor", celery_workers: tuple[str, ...] = ()):
        self.extra_env = dict(env)
        self.executor = executor
        self.celery_workers = tuple(celery_workers) if executor == "CeleryExecutor" else ()
        self.triggerer = triggerer
        self.components = COMPONENTS + ((TRIGGERER,) if triggerer else ())
        self.dags_folder = Path(dags_folder)
        self.parallelism = parallelism
        self.dag_ids = tuple(dag_ids)
        self.home = Path(home) if home else Path(tempfile.mkdtemp(prefix="cmsuser-real-airflow-"))
        self.database = database
        self.pool_slots = pool_slots
        self.port = 0
        self.url = ""
        self.processes: dict[str, subprocess.Popen] = {}
        self.startup_seconds: float | None = None
        self.timings: dict[str, float] = {}
        self._config: dict[str, str] = {}
        self._http = requests.Session()
        self._admin_password = secrets.token_urlsafe(16)

    # ------------------------------------------------------------------ lifecycle

    def _airflow_config(self) -> dict[str, str]:
        """Airflow's configuration for this stack, as environment variables (fresh keys each start)."""
        from cryptography.fernet import Fernet

        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            # The UI's Test button (POST /api/v2/connections/test) runs the hook's test_connection()
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
                f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            # Task tokens are signed by the scheduler and checked by the api-server: one secret for all.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # Only runs the test triggers: unpausing must not add a scheduled run of its own. With the
            # triggerer it must be on: the same switch makes the runs of asset events (unpause only
            # asset-scheduled DAGs then, e.g. dag_ids=("cmsuser_realtime",)).
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(self.triggerer),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "90",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
            # Other sessions on this machine may run Airflow too: no fixed ports.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # the triggerer (when started) reports itself alive at the scheduler's pace
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            # a task whose worker died is failed (and retried) after this long without a heartbeat
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # CeleryExecutor (when chosen): this machine's Redis as the broker, the stack's database for results
            "AIRFLOW__CELERY__BROKER_URL": f"{REDIS_URL}/{CELERY_REDIS_DB}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            # a task a killed worker had taken from Redis but not started stays queued until this (default 600 s)
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "sandbox.real_airflow.worker_hostname",
            # The creation lock: PostgreSQL advisory locks in this stack's own database, as production has them
            # (task processes are separate, so an in-process lock would protect nothing here)
            "AIRFLOW_CONN_CMSUSER_LOCK": json.dumps({"conn_type": "postgres", "host": PG_HOST, "port": PG_PORT,
                                                     "login": PG_USER, "schema": self.database}),
        }

    def child_env(self) -> dict[str, str]:
        """Environment of every Airflow process: our config, then the caller's (connections, settings)."""
        # The pytest session's own AIRFLOW_* settings (SQLite home) must not leak into the children.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(self._config)
        env.update(self.extra_env)
        return env

    def _airflow(self, *args: str, timeout: float = 300) -> None:
        """Run one `airflow` CLI command to completion; its output goes to a log file in the home."""
        log_file = self.home / f"cli-{args[0]}.log"
        with log_file.open("ab") as out:
            proc = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.child_env(), stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        if proc.returncode != 0:
            raise AirflowHarnessError(f"`airflow {' '.join(args)}` exited with {proc.returncode}; "
                                      f"last lines of {log_file}:\n{_tail(log_file)}")

    def start(self, timeout: float = 120) -> None:
        """Fresh database, the components, a REST login; returns once the DAGs are parsed and unpaused."""
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The simple auth manager reads the admin's password from this file (it would otherwise
        # generate one and print it to the api-server log).
        (self.home / "passwords.json").write_text(json.dumps({ADMIN_USER: self._admin_password}))
        self._config = self._airflow_config()
        _fresh_database(self.database)
        compile_code(REPO / "plugins", self.dags_folder)
        self._airflow("db", "migrate")
        self.timings["db migrate"] = time.monotonic() - started
        if self.celery_workers:
            import redis

            redis.Redis.from_url(f"{REDIS_URL}/{CELERY_REDIS_DB}").flushdb()  # no queued work of an earlier start
        commands = {name: [name] for name in self.components}
        extra_env: dict[str, dict[str, str]] = {}
        for worker in self.celery_workers:
            name = f"celery-worker-{worker}"
            commands[name] = ["celery", "worker", "--celery-hostname", f"{worker}@%h", "--skip-serve-logs"]
            extra_env[name] = {"CMSUSER_WORKER_NAME": worker}
        for name, command in commands.items():
            log_file = (self.home / f"{name}.log").open("ab")
            # Own process group: stop() can end each component together with its task subprocesses.
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *command], env={**self.child_env(), **extra_env.get(name, {})},
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            log_file.close()
        try:
            deadline = started + timeout
            self._wait_for_api(deadline)
            self._login()
            self._request("POST", "/api/v2/pools", json={
                "name": CMS_POOL, "slots": self.pool_slots, "description": "CMS user creation",
                "include_deferred": False})
            for dag_id in self.dag_ids:
                self._wait_for_dag(dag_id, deadline)
                dag = self._request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
                if self.triggerer:
                    # a DAG's watchers are registered when its file is parsed unpaused: ask for that parse
                    # now rather than waiting for the next one (min_file_process_interval)
                    self._request("PUT", f"/api/v2/parseDagFile/{dag['file_token']}", accept_status=(201,))
        except BaseException:
            self.print_component_logs()
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self.timings["components up, DAGs parsed"] = self.startup_seconds - self.timings["db migrate"]
        print(f"real Airflow up in {self.startup_seconds:.1f}s (" + ", ".join(
            f"{step} {seconds:.1f}s" for step, seconds in self.timings.items()) + f") at {self.url}, "
            f"home {self.home}", flush=True)

    def stop(self) -> None:
        """End every component and the task processes they started; the database and home are left."""
        for name, proc in list(self.processes.items()):
            if proc.poll() is not None:
                continue
            try:
                family = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                family = []
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop within 20s of SIGTERM; killing it", flush=True)
                with _suppress_lookup():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Children that left the group (their own session) are ended one by one.
            for child in family:
                with _suppress_lookup():
                    child.kill()
        self.processes.clear()

    def __enter__(self) -> RealAirflow:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def print_component_logs(self, lines: int = 40) -> None:
        """The last lines of each component's log, to see why something did not start or run."""
        for name in [*self.components, *(f"celery-worker-{w}" for w in self.celery_workers)]:
            print(f"----- last {lines} lines of {self.home / (name + '.log')}\n"
                  f"{_tail(self.home / f'{name}.log', lines)}", flush=True)

    def kill_component(self, name: str) -> None:
        """SIGKILL a component and every process it started (a worker dying with its tasks mid-work)."""
        proc = self.processes.pop(name)
        family = psutil.Process(proc.pid).children(recursive=True)
        with _suppress_lookup():
            os.killpg(proc.pid, signal.SIGKILL)
        for child in family:
            with _suppress_lookup():
                child.kill()
        proc.wait(timeout=10)

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise AirflowHarnessError(f"airflow {name} exited with {proc.returncode}; last lines of its log:\n"
                                          f"{_tail(self.home / f'{name}.log')}")

    def _wait_for_api(self, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                if self._http.get(self.url + "/api/v2/monitor/health", timeout=5).ok:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AirflowHarnessError(f"api-server did not answer on {self.url} in time; "
                                          f"see {self.home / 'api-server.log'}")
            time.sleep(0.5)

    def _login(self) -> None:
        answer = self._http.post(self.url + "/auth/token", timeout=10,
                                 json={"username": ADMIN_USER, "password": self._admin_password})
        if answer.status_code != 201:
            raise AirflowHarnessError(f"POST /auth/token answered {answer.status_code}: {answer.text[:300]}")
        self._http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def _wait_for_dag(self, dag_id: str, deadline: float) -> None:
        while True:
            self._check_alive()
            if self._http.get(f"{self.url}/api/v2/dags/{dag_id}", timeout=10).ok:
                return
            errors = self._request("GET", "/api/v2/importErrors", params={"limit": 100})["import_errors"]
            if errors:
                raise AirflowHarnessError("DAG import errors:\n" + "\n".join(
                    f"{e['filename']}: {e['stack_trace']}" for e in errors))
            if time.monotonic() > deadline:
                raise AirflowHarnessError(f"DAG {dag_id} was not parsed in time (dags folder {self.dags_folder}); "
                                          f"see {self.home / 'dag-processor.log'}")
            time.sleep(1)

    # ------------------------------------------------------------------ REST

    def _request(self, method: str, path: str, *, accept_status=(200, 201), **kwargs):
        answer = self._http.request(method, self.url + path, timeout=30, **kwargs)
        if answer.status_code not in accept_status:
            raise AirflowHarnessError(f"{method} {path} answered {answer.status_code}: {answer.text[:500]}")
        return answer.json() if answer.content else None

    def test_connection(self, connection: dict) -> dict:
        """What the UI's Test button gets for this connection form (`connection_id`, `conn_type`, host, ...):
        {"status": bool, "message": str}, from the hook of its type, run in the api-server."""
        return self._request("POST", "/api/v2/connections/test", json=connection)

    def set_connection(self, conn_id: str, connection: dict) -> None:
        """Create or replace a connection in the metadata database, as the UI's form does; `connection` in
        Airflow's JSON form (conn_type, host, login, password, schema, port, extra as a dict)."""
        body = {"connection_id": conn_id, **{k: v for k, v in connection.items() if k != "extra"},
                "extra": json.dumps(connection.get("extra") or {})}
        answer = self._http.post(f"{self.url}/api/v2/connections", json=body, timeout=30)
        if answer.status_code == 409:  # it exists: replace every field
            self._request("PATCH", f"/api/v2/connections/{conn_id}", json=body)
        elif answer.status_code != 201:
            raise AirflowHarnessError(f"POST /api/v2/connections answered {answer.status_code}: {answer.text[:500]}")

    def trigger(self, dag_id: str = DAG_ID, conf: dict | None = None) -> str:
        """Trigger a run as the UI's Trigger button does (no logical date); returns its run id."""
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                            json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def post_run(self, dag_id: str, run_id: str, conf: dict | None = None) -> tuple[int, dict]:
        """POST a run with a chosen dag_run_id (no logical date), as an external system does; returns
        (HTTP status, body) whatever the status (201 started, 409 that id exists)."""
        answer = self._http.post(f"{self.url}/api/v2/dags/{dag_id}/dagRuns", timeout=30,
                                 json={"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})
        return answer.status_code, (answer.json() if answer.content else {})

    def runs(self, dag_id: str) -> list[dict]:
        """Every run of the DAG, oldest first (run_type, state, conf, dates)."""
        found: list[dict] = []
        while True:
            page = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns",
                                 params={"limit": 100, "offset": len(found), "order_by": "id"})
            found += page["dag_runs"]
            if len(found) >= page["total_entries"] or not page["dag_runs"]:
                return found

    def log_text(self, component: str) -> str:
        """What a component has written to its log so far (e.g. the triggerer's watcher lines)."""
        try:
            return (self.home / f"{component}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, component: str, text: str, timeout: float = 90) -> float:
        """Poll until `text` is in the component's log (e.g. a watcher saying it started); returns the seconds."""
        started = time.monotonic()
        while text not in self.log_text(component):
            self._check_alive()
            if time.monotonic() - started > timeout:
                self.print_component_logs()
                raise AirflowHarnessError(f"{component} did not log {text!r} within {timeout:.0f}s")
            time.sleep(0.5)
        return time.monotonic() - started

    def run_state(self, dag_id: str, run_id: str) -> str:
        # a loaded machine can make the api-server answer one poll with a 500 "Database error" (its
        # metadata session lost a race with the scheduler): ask again, a few times, before giving up
        for attempt in range(3):
            try:
                return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            except AirflowHarnessError as exc:
                if attempt == 2 or "answered 500" not in str(exc):
                    raise
                print(f"api-server hiccup while polling {run_id}, asking again: {str(exc)[:200]}", flush=True)
                time.sleep(2)
        raise AssertionError("unreachable")

    def wait(self, dag_id: str, run_id: str, timeout: float = 300, poll: float = 2.0) -> str:
        """Poll (every `poll` seconds) until the run is success or failed; prints the task states whenever they
        change."""
        started = time.monotonic()
        last_shown, last_print = None, 0.0
        while True:
            self._check_alive()
            state = self.run_state(dag_id, run_id)
            now = time.monotonic()
            shown = self._progress(dag_id, run_id)
            if shown != last_shown or now - last_print > 15 or state in TERMINAL_RUN_STATES:
                print(f"[{now - started:5.0f}s] {run_id}: {state} | {shown}", flush=True)
                last_shown, last_print = shown, now
            if state in TERMINAL_RUN_STATES:
                return state
            if now - started > timeout:
                self.print_component_logs()
                raise AirflowHarnessError(f"run {run_id} still {state} after {timeout:.0f}s: {shown}")
            time.sleep(poll)

    def wait_for_task(self, dag_id: str, run_id: str, task_id: str, timeout: float = 120,
                      poll: float = 0.2) -> dict[str, str]:
        """Poll quickly until task_id (unmapped) is finished; returns every task's state at that moment."""
        deadline = time.monotonic() + timeout
        while True:
            states = {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
                      for ti in self.task_instances(dag_id, run_id)}
            if states.get(task_id) in FINISHED_TASK_STATES:
                return states
            if time.monotonic() > deadline:
                self._check_alive()
                raise AirflowHarnessError(f"{task_id} of run {run_id} did not finish in {timeout:.0f}s: {states}")
            time.sleep(poll)

    def _progress(self, dag_id: str, run_id: str) -> str:
        parts = []
        for ti in sorted(self.task_instances(dag_id, run_id), key=lambda t: (t["start_date"] or "~", t["map_index"])):
            name = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
            parts.append(f"{name}={ti['state']}#{ti['try_number']}")
        return " ".join(parts)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run (mapped ones one by one), with state, try_number, rendered_fields."""
        found: list[dict] = []
        while True:
            page = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                                 params={"limit": 100, "offset": len(found)})
            found += page["task_instances"]
            if len(found) >= page["total_entries"] or not page["task_instances"]:
                return found

    def clear(self, dag_id: str, run_id: str, task_id: str, map_index: int | list[int] | None = None,
              downstream: bool = True) -> list[dict]:
        """Clear task instances as the UI's Clear button does; returns the cleared ones.

        map_index: one index, several (cleared in one request, so downstream cannot start in
        between), or None for every index of a mapped task.
        """
        if map_index is None:
            task_ids: list = [task_id]
        elif isinstance(map_index, int):
            task_ids = [[task_id, map_index]]
        else:
            task_ids = [[task_id, index] for index in map_index]
        body = {"dag_run_id": run_id, "task_ids": task_ids,
                "include_downstream": downstream, "include_upstream": False, "only_failed": False,
                "dry_run": False, "reset_dag_runs": True}
        return self._request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[int]:
        """Try numbers that ran (task instance history plus the current try)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        path += f"/{map_index}/tries" if map_index >= 0 else "/tries"
        rows = self._request("GET", path)["task_instances"]
        return sorted({row["try_number"] for row in rows if row["try_number"] > 0})

    def logs(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        """The full log of one try, as text."""
        answer = self._request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": "true"}, headers={"Accept": "application/json"})
        return _log_text(answer.get("content"))

    def all_logs(self, dag_id: str, run_id: str) -> dict[tuple[str, int, int], str]:
        """Every try's log of every task instance of the run, keyed (task_id, map_index, try_number)."""
        logs = {}
        for ti in self.task_instances(dag_id, run_id):
            for try_number in self.tries(dag_id, run_id, ti["task_id"], ti["map_index"]):
                logs[(ti["task_id"], ti["map_index"], try_number)] = self.logs(
                    dag_id, run_id, ti["task_id"], ti["map_index"], try_number)
        return logs

    def xcoms(self, dag_id: str, run_id: str) -> list[dict]:
        """Every XCom entry of the run, each with its value as stored (JSON-decoded where it is JSON)."""
        entries: list[dict] = []
        while True:
            page = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/~/xcomEntries",
                                 params={"limit": 100, "offset": len(entries)})
            entries += page["xcom_entries"]
            if len(entries) >= page["total_entries"] or not page["xcom_entries"]:
                break
        for entry in entries:
            value = self._request(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{entry['task_id']}"
                f"/xcomEntries/{entry['key']}", params={"map_index": entry["map_index"]})["value"]
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            entry["value"] = value
        return entries

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1, *,
             resolve: bool = True):
        """One XCom value of the run (None when there is none); with `resolve`, a reference to a run file (the
        per-contact data, on this host's disk) is read through."""
        answer = self._http.get(
            f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index}, timeout=30)
        if answer.status_code == 404:
            return None
        if not answer.ok:
            raise AirflowHarnessError(f"XCom {task_id}/{key} answered {answer.status_code}: {answer.text[:300]}")
        from pipeline import run_files

        value = answer.json()["value"]
        value = json.loads(value) if isinstance(value, str) else value
        return run_files.read(value) if resolve and run_files.is_ref(value) else value

    def rendered_fields(self, dag_id: str, run_id: str) -> dict[tuple[str, int], dict]:
        """Rendered template fields of each task instance, keyed (task_id, map_index)."""
        return {(ti["task_id"], ti["map_index"]): ti.get("rendered_fields") or {}
                for ti in self.task_instances(dag_id, run_id)}

    # ------------------------------------------------------------------ human-in-the-loop (approvals)

    def hitl_details(self, dag_id: str, run_id: str, *, pending: bool | None = True) -> list[dict]:
        """The run's human-in-the-loop requests (the UI's Required Actions); `pending`: not yet answered."""
        params = {"limit": 100} | ({"response_received": str(not pending).lower()} if pending is not None else {})
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails",
                             params=params)["hitl_details"]

    def wait_for_input(self, dag_id: str, run_id: str, task_id: str, timeout: float = 180,
                       settle: float = 12) -> dict:
        """Poll until task_id waits for an answer (state awaiting_input); returns its request.

        Then waits `settle` seconds more, as a person would. In Airflow 3.3.2 the LocalExecutor reports
        the parking workload as finished about 5 s after the task parked; an answer given before that
        report is handled re-queues the task, and the late report ("success" for a task that is
        queued or running again) makes the scheduler fail that try: the resumed task's result is
        refused (404) and the task's retry writes the request afresh and waits again. Seen here with
        answers 1 s and 4 s after parking."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            states = {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}
            if states.get(task_id) == "awaiting_input":
                time.sleep(settle)
                (request,) = [d for d in self.hitl_details(dag_id, run_id)
                              if d["task_instance"]["task_id"] == task_id]
                return request
            if states.get(task_id) in FINISHED_TASK_STATES or time.monotonic() > deadline:
                self.print_component_logs()
                raise AirflowHarnessError(f"{task_id} of run {run_id} is not waiting for input: {states}")
            time.sleep(0.5)

    def respond(self, dag_id: str, run_id: str, task_id: str, options: list[str], *, map_index: int = -1,
                params_input: dict | None = None, accept_status=(200,)) -> tuple[int, dict]:
        """Answer a request as an operator does: PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails.

        Returns (HTTP status, body); a status outside `accept_status` raises."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
        answer = self._http.patch(self.url + path, timeout=30,
                                  json={"chosen_options": options, "params_input": params_input or {}})
        if answer.status_code not in accept_status:
            raise AirflowHarnessError(f"PATCH {path} answered {answer.status_code}: {answer.text[:500]}")
        return answer.status_code, answer.json()


def _suppress_lookup():
    """Ignore processes that are already gone."""
    return contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess)
