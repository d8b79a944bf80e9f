"""The deployable stack (docker-compose.yaml, Dockerfile, .env.example, docker/make_env.py),
checked without a Docker engine.

Nothing here builds the image or starts a container. What is checked instead: the compose file
against the Compose Specification's JSON schema (vendored in compose-spec.json, source in
compose-spec.SOURCE.md), Compose's variable interpolation against .env.example and against a
.env written by make_env.py, and the cross-references between the stack and the code: mounts,
versions, connection ids, the pool name, COPY sources and the sandbox commands.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA_FILE = HERE / "compose-spec.json"

AIRFLOW_HOME = "/opt/airflow"
#: The Airflow components of the official stack and the command each one runs.
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}
#: Container path -> host path every Airflow container must mount.
REQUIRED_MOUNTS = {
    f"{AIRFLOW_HOME}/dags": "./dags",
    f"{AIRFLOW_HOME}/plugins": "./plugins",
    f"{AIRFLOW_HOME}/config": "./config",
}
SANDBOX_PROFILE = "sandbox"
#: Sandbox service -> the emulator it runs (`python -m sandbox <kind>`).
SANDBOX_SERVICES = {"civicrm-sandbox": "civicrm", "wordpress-sandbox": "wordpress"}
DEFAULT_CONN_IDS = {"civicrm_conn_id": "civicrm_default", "cms_conn_id": "cms_default"}
#: Connection extras the hooks understand (docs/design.md); anything else is a typo.
KNOWN_EXTRAS = {"civicrm_conn_id": {"site_key", "api4_url", "verify"}, "cms_conn_id": {"rest_url", "verify"}}
#: Which sandbox service each connection points at in .env.example.
SANDBOX_FOR_CONN = {"civicrm_conn_id": "civicrm-sandbox", "cms_conn_id": "wordpress-sandbox"}
POOL_SET = re.compile(r"airflow pools set\s+(?P<name>\S+)\s+(?P<slots>\S+)")


# --------------------------------------------------------------------------------------------
# Loading


def load_compose(path: Path = COMPOSE_FILE) -> dict:
    # PyYAML's safe loader resolves anchors and `<<` merge keys the way Compose does.
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@functools.cache
def schema_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def parse_env_file(text: str) -> dict[str, str]:
    """A .env file as Compose reads it: KEY=VALUE lines, '#' comments, quotes around values."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise ValueError(f".env line {number} is not NAME=VALUE: {raw[:40]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]  # single quotes: literal
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"')
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        values[name.strip()] = value
    return values


def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))


def import_make_env():
    sys.path.insert(0, str(REPO / "docker"))
    try:
        import make_env
    finally:
        sys.path.pop(0)
    return make_env


# --------------------------------------------------------------------------------------------
# Compose variable interpolation (the subset of the spec this project uses, done strictly)

_DOLLAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


@dataclass(frozen=True)
class VarRef:
    name: str
    op: str | None  # None, '-', ':-', '?', ':?', '+', ':+'
    arg: str
    where: str

    @property
    def has_default(self) -> bool:
        return self.op in ("-", ":-", "+", ":+")

    @property
    def required(self) -> bool:
        return self.op in ("?", ":?")


def _strings(node, where: str = ""):
    """Every string value of a parsed compose document, with its path (keys are not interpolated)."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{where}/{index}")


def variable_refs(doc) -> list[VarRef]:
    refs = []
    for where, text in _strings(doc):
        for match in _DOLLAR.finditer(text):
            if match["escaped"]:
                continue
            if match["named"]:
                refs.append(VarRef(match["named"], None, "", where))
                continue
            braced = _BRACED.fullmatch(match["braced"])
            if not braced:
                raise ValueError(f"{where}: cannot read ${{{match['braced']}}}")
            refs.append(VarRef(braced["name"], braced["op"], braced["arg"] or "", where))
    return refs


def interpolate(doc, env: dict[str, str]):
    """(doc with variables substituted, errors) following Compose's rules for the operators above."""
    errors: list[str] = []

    def substitute(text: str, where: str) -> str:
        def one(match: re.Match) -> str:
            if match["escaped"]:
                return "$"
            if match["named"]:
                name, op, arg = match["named"], None, ""
            else:
                braced = _BRACED.fullmatch(match["braced"])
                if not braced:
                    errors.append(f"{where}: cannot read ${{{match['braced']}}}")
                    return ""
                name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
            value = env.get(name)
            if op in ("?", ":?") and (value is None or (op == ":?" and value == "")):
                errors.append(f"{where}: required variable {name} is missing a value: {arg}")
                return ""
            if op == ":-":
                return value if value else arg
            if op == "-":
                return arg if value is None else value
            if op == ":+":
                return arg if value else ""
            if op == "+":
                return "" if value is None else arg
            if value is None:
                errors.append(f"{where}: variable {name} is not set and has no default")
                return ""
            return value

        return _DOLLAR.sub(one, text)

    def walk(node, where: str = ""):
        if isinstance(node, str):
            return substitute(node, where)
        if isinstance(node, dict):
            return {key: walk(value, f"{where}/{key}") for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, f"{where}/{index}") for index, value in enumerate(node)]
        return node

    return walk(doc), errors


# --------------------------------------------------------------------------------------------
# The validator: each check returns a list of problems, empty when all is well


def schema_errors(doc) -> list[str]:
    errors = sorted(schema_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"schema: {'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in errors]


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts_of(service: dict) -> dict[str, str]:
    """Container path -> source, for bind mounts in short ("src:dst[:mode]") or long form."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume.get("target", "")] = volume.get("source", "")
        else:
            parts = volume.split(":")
            if len(parts) >= 2:
                mounts[parts[1]] = parts[0]
    return mounts


def command_words(value) -> list[str]:
    if value is None:
        return []
    return value.split() if isinstance(value, str) else [str(word) for word in value]


def uses_project_image(service: dict) -> bool:
    return "build" in service


def is_sandbox(service: dict) -> bool:
    return SANDBOX_PROFILE in (service.get("profiles") or [])


def airflow_services(doc) -> dict[str, dict]:
    """Services that run Airflow from the project's image (the sandbox emulators do not)."""
    services = doc.get("services") or {}
    return {name: svc for name, svc in services.items()
            if isinstance(svc, dict) and uses_project_image(svc) and not is_sandbox(svc)}


def mount_problems(doc) -> list[str]:
    problems = []
    for name, service in airflow_services(doc).items():
        mounts = mounts_of(service)
        for target, source in REQUIRED_MOUNTS.items():
            if mounts.get(target) != source:
                problems.append(f"{name}: must mount {source} at {target} (has {mounts.get(target)!r})")
    return problems


def airflow_setting_problems(doc) -> list[str]:
    problems = []
    services = doc.get("services") or {}
    for name, command in AIRFLOW_COMPONENTS.items():
        if name not in services:
            problems.append(f"{name}: service missing (the official stack runs `airflow {command}`)")
        elif command_words(services[name].get("command")) != command.split():
            problems.append(f"{name}: command should be {command!r}, is {services[name].get('command')!r}")
    for name in ("airflow-init", "postgres", "redis"):
        if name not in services:
            problems.append(f"{name}: service missing")
    if "postgres" in services and services["postgres"].get("image") != "postgres:16":
        problems.append(f"postgres: image should be postgres:16, is {services['postgres'].get('image')!r}")

    apiserver_port = "8080"
    jwt_secrets = set()
    for name, service in airflow_services(doc).items():
        env = environment_of(service)
        expected = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://airflow-apiserver:{apiserver_port}/execution/",
            "CMSUSER_SETTINGS": f"{AIRFLOW_HOME}/config/cmsuser.yaml",
        }
        for key, value in expected.items():
            if env.get(key, "").lower() != value.lower():
                problems.append(f"{name}: {key} should be {value!r}, is {env.get(key)!r}")
        if not env.get("AIRFLOW__API_AUTH__JWT_SECRET"):
            problems.append(f"{name}: AIRFLOW__API_AUTH__JWT_SECRET missing (every component needs the same one)")
        jwt_secrets.add(env.get("AIRFLOW__API_AUTH__JWT_SECRET"))
    if len(jwt_secrets) > 1:
        problems.append(f"AIRFLOW__API_AUTH__JWT_SECRET differs between services: {sorted(map(str, jwt_secrets))}")
    return problems


def init_pool(doc) -> tuple[str, str] | None:
    """(pool name, slots) from airflow-init's `airflow pools set`, or None."""
    init = (doc.get("services") or {}).get("airflow-init") or {}
    match = POOL_SET.search(" ".join(command_words(init.get("command"))))
    return (match["name"].strip("\"'"), match["slots"].strip("\"'")) if match else None


def pool_problems(doc, expected_pool: str = "cmsuser_cms") -> list[str]:
    found = init_pool(doc)
    if found is None:
        return ["airflow-init: does not create the pool (`airflow pools set <name> <slots> <description>`)"]
    if found[0] != expected_pool:
        return [f"airflow-init: creates pool {found[0]!r}, the code uses {expected_pool!r}"]
    return []


def connection_problems(doc, conn_ids: dict[str, str]) -> list[str]:
    problems = []
    worker = environment_of((doc.get("services") or {}).get("airflow-worker") or {})
    for conn_id in conn_ids.values():
        variable = f"AIRFLOW_CONN_{conn_id.upper()}"
        if variable not in worker:
            problems.append(f"airflow-worker: {variable} missing (connection {conn_id!r} of config/cmsuser.yaml)")
    return problems


def sandbox_command(service: dict) -> list[str]:
    return command_words(service.get("entrypoint")) + command_words(service.get("command"))


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words and words.index(name) + 1 < len(words) else None


def sandbox_problems(doc) -> list[str]:
    problems = []
    services = doc.get("services") or {}
    for name, kind in SANDBOX_SERVICES.items():
        service = services.get(name)
        if service is None:
            problems.append(f"{name}: service missing from the {SANDBOX_PROFILE!r} profile")
            continue
        if service.get("profiles") != [SANDBOX_PROFILE]:
            problems.append(f"{name}: profiles should be [{SANDBOX_PROFILE!r}], are {service.get('profiles')!r}")
        if not uses_project_image(service):
            problems.append(f"{name}: should be built from the project's Dockerfile")
        words = sandbox_command(service)
        if words[:4] != ["python", "-m", "sandbox", kind]:
            problems.append(f"{name}: should run `python -m sandbox {kind} ...`, runs {' '.join(words)!r}")
        seed = option(words, "--seed") or ""
        if not seed.startswith(f"{AIRFLOW_HOME}/sandbox/"):
            problems.append(f"{name}: --seed should be a file under {AIRFLOW_HOME}/sandbox/, is {seed!r}")
        if option(words, "--host") != "0.0.0.0":
            problems.append(f"{name}: --host 0.0.0.0 needed, or other containers cannot reach the emulator")
        if not (option(words, "--port") or "").isdigit():
            problems.append(f"{name}: --port <number> missing")
    return problems


def stack_problems(doc, conn_ids: dict[str, str] = DEFAULT_CONN_IDS, pool: str = "cmsuser_cms") -> list[str]:
    """Everything this module knows to check about a compose document."""
    return (schema_errors(doc) + mount_problems(doc) + airflow_setting_problems(doc)
            + pool_problems(doc, pool) + connection_problems(doc, conn_ids) + sandbox_problems(doc))


# --------------------------------------------------------------------------------------------
# What the code and the lock say


def configured_conn_ids() -> dict[str, str]:
    """civicrm_conn_id / cms_conn_id as config/cmsuser.yaml gives them (sections or not), through the loader."""
    from provisioning.settings import load_settings

    settings = load_settings(REPO / "config" / "cmsuser.yaml")
    return {key: getattr(settings, key) for key in DEFAULT_CONN_IDS}


def pools_in_code() -> set[str]:
    """Pool names written as string literals in plugins/ and dags/ (pool=..., *_POOL = ...)."""
    pattern = re.compile(r"""(?:\bpool\s*=\s*|\b[A-Z_]*POOL\s*=\s*)["']([^"']+)["']""")
    names = set()
    for folder in ("plugins", "dags"):
        for path in (REPO / folder).rglob("*.py"):
            names.update(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    out = []
    for line in joined:
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def requirement_pin(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    assert match, f"requirements.txt has no {name}== pin"
    return match[1]


# --------------------------------------------------------------------------------------------
# Tests: the compose file


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_compose_file_is_valid_under_the_compose_spec_schema(compose):
    assert schema_errors(compose) == []


def test_compose_file_is_still_valid_after_interpolation_with_the_example_env(compose):
    make_env = import_make_env()
    env = env_example() | {name: "generated" for name in make_env.GENERATED}
    resolved, errors = interpolate(compose, env)
    assert errors == []
    assert schema_errors(resolved) == []


def test_every_airflow_container_mounts_dags_plugins_and_config(compose):
    assert set(airflow_services(compose)) >= set(AIRFLOW_COMPONENTS) | {"airflow-init"}
    assert mount_problems(compose) == []


def test_airflow_components_match_the_official_celery_stack(compose):
    assert airflow_setting_problems(compose) == []


def test_the_scheduler_loops_often_enough_for_a_chain_of_short_steps(compose):
    """The idle sleep docs/deploy.md and the benchmarks measured (0.2 s), not Airflow's 1 s, for every component
    that reads it (the scheduler, and the others share the one environment)."""
    for name in AIRFLOW_COMPONENTS:
        env = compose["services"][name].get("environment") or {}
        assert float(env.get("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", 1.0)) == 0.2, name


def test_airflow_init_creates_the_pool_the_code_uses(compose):
    in_code = pools_in_code()
    assert in_code, 'no pool named in plugins/ or dags/; expected CMS_POOL = "cmsuser_cms" beside the tasks'
    assert len(in_code) == 1, f"the code names several pools: {sorted(in_code)}"
    (pool,) = in_code
    assert pool_problems(compose, pool) == []
    _, slots = init_pool(interpolate(compose, env_example())[0])
    assert slots.isdigit() and int(slots) > 0, f"pool slots must be a positive number, are {slots!r}"


def test_worker_gets_the_connections_named_in_the_settings(compose):
    conn_ids = configured_conn_ids()
    assert connection_problems(compose, conn_ids) == []


def test_sandbox_profile_runs_both_emulators_from_the_project_image(compose):
    assert sandbox_problems(compose) == []
    for name in SANDBOX_SERVICES:
        seed = option(sandbox_command(compose["services"][name]), "--seed")
        local_seed = REPO / seed.removeprefix(f"{AIRFLOW_HOME}/")
        assert local_seed.is_file(), f"{name}: seed {seed} is {local_seed} in the repository, which is missing"


def test_sandbox_module_accepts_the_arguments_compose_passes(compose):
    # a moved or missing emulator module fails here, loudly (no "not written yet" skip)
    for name, kind in SANDBOX_SERVICES.items():
        words = sandbox_command(compose["services"][name])
        result = subprocess.run([sys.executable, "-m", "sandbox", kind, "--help"], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"`python -m sandbox {kind} --help` failed:\n{result.stderr[-2000:]}"
        for word in words[4:]:
            if word.startswith("--"):
                listed = re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", result.stdout) is not None
                assert listed, f"{name}: `python -m sandbox {kind}` has no option {word}"


def test_validator_reports_a_broken_compose_file(compose):
    broken = copy.deepcopy(compose)
    services = broken["services"]
    services["airflow-worker"]["volumes"] = [v for v in services["airflow-worker"]["volumes"] if "plugins" not in v]
    services["airflow-scheduler"]["depends_on"]["postgres"]["condition"] = "service_ready"  # no such condition
    services["airflow-triggerer"]["imagee"] = "typo"  # not a service key
    services["airflow-apiserver"]["environment"] = dict(services["airflow-apiserver"]["environment"],
                                                        AIRFLOW__CORE__LOAD_EXAMPLES="true")
    services["airflow-init"]["command"] = ["-c", "airflow pools set another_pool 4 x"]
    services["wordpress-sandbox"]["command"] = ["joomla", "--port", "8002"]
    del services["airflow-dag-processor"]

    problems = "\n".join(stack_problems(broken))

    assert "airflow-worker: must mount ./plugins at /opt/airflow/plugins" in problems
    assert "schema: services/airflow-scheduler/depends_on" in problems
    assert "schema: services/airflow-triggerer: 'imagee' does not match" in problems
    assert "airflow-apiserver: AIRFLOW__CORE__LOAD_EXAMPLES should be 'false'" in problems
    assert "creates pool 'another_pool'" in problems
    assert "wordpress-sandbox: should run `python -m sandbox wordpress" in problems
    assert "airflow-dag-processor: service missing" in problems


def test_schema_rejects_a_minimal_wrong_document():
    errors = schema_errors({"services": {"web": {"image": 5, "ports": {"a": 1}}}, "volumez": {}})
    assert any("volumez" in e for e in errors), errors
    assert any("services/web/image" in e for e in errors), errors
    assert any("services/web/ports" in e for e in errors), errors


def test_interpolation_reports_a_missing_required_secret(compose):
    env = env_example() | {"AIRFLOW_FERNET_KEY": ""}
    _, errors = interpolate(compose, env)
    assert any("required variable AIRFLOW_FERNET_KEY" in e and "make_env.py" in e for e in errors), errors


# --------------------------------------------------------------------------------------------
# Tests: .env.example and make_env.py


def test_env_example_defines_every_variable_the_compose_file_uses(compose):
    example = env_example()
    make_env = import_make_env()
    refs = variable_refs(compose)
    assert refs, "no ${VAR} found: the reader is broken"
    missing = sorted({r.name for r in refs} - set(example))
    assert missing == [], f".env.example lacks {missing}"
    without_default = sorted({r.name for r in refs if r.op is None and not example[r.name]})
    assert without_default == [], f"used without default but empty in .env.example: {without_default}"
    # Required secrets may be empty in the example only if make_env.py fills them.
    unfilled = sorted({r.name for r in refs if r.required and not example[r.name]} - set(make_env.GENERATED))
    assert unfilled == [], f"required, empty in .env.example and not generated by make_env.py: {unfilled}"
    unused = sorted(set(example) - {r.name for r in refs})
    assert unused == [], f".env.example sets variables the compose file never reads: {unused}"


def test_env_example_connections_are_valid_airflow_connections_for_the_sandbox(compose):
    from airflow.models.connection import Connection

    example = env_example()
    for key, conn_id in configured_conn_ids().items():
        raw = example[f"AIRFLOW_CONN_{conn_id.upper()}"]
        data = json.loads(raw)
        assert data["conn_type"] == "http"
        assert data.get("password"), f"{conn_id}: password (API key / application password) missing"
        if key == "cms_conn_id":
            assert data.get("login"), f"{conn_id}: login (WordPress user) missing"
        assert set(data.get("extra") or {}) <= KNOWN_EXTRAS[key], f"{conn_id}: unknown extras {data.get('extra')}"
        # The example points at the sandbox service of the same stack, on the port it listens on.
        service = SANDBOX_FOR_CONN[key]
        port = option(sandbox_command(compose["services"][service]), "--port")
        assert data["host"] == f"http://{service}:{port}", f"{conn_id}: host {data['host']} is not {service}:{port}"
        # ... with the credentials that emulator is started with.
        words = sandbox_command(compose["services"][service])
        expected = ({"password": option(words, "--api-key"), "site_key": option(words, "--site-key")}
                    if key == "civicrm_conn_id" else
                    {"login": option(words, "--login"), "password": option(words, "--app-password")})
        actual = {name: (data.get("extra") or {}).get(name) if name == "site_key" else data.get(name)
                  for name in expected}
        assert actual == expected, f"{conn_id}: credentials differ from those {service} is started with"
        parsed = Connection.from_json(raw, conn_id=conn_id)
        assert (parsed.conn_type, parsed.host, parsed.password) == ("http", data["host"], data["password"])


def test_make_env_writes_a_private_env_with_fresh_secrets(tmp_path, capsys, compose):
    from cryptography.fernet import Fernet

    make_env = import_make_env()
    output = tmp_path / ".env"
    assert make_env.main(["--example", str(ENV_EXAMPLE), "--output", str(output)]) == 0
    printed = capsys.readouterr()

    written = parse_env_file(output.read_text(encoding="utf-8"))
    secrets = {name: written[name] for name in make_env.GENERATED}
    assert all(len(value) >= 32 for value in secrets.values()), "a generated secret is empty or short"
    assert len(set(secrets.values())) == len(secrets), "two secrets are equal"
    assert all(value not in printed.out + printed.err for value in secrets.values()), "a secret was printed"
    Fernet(written["AIRFLOW_FERNET_KEY"].encode())  # raises if not a valid Fernet key
    # Compared as booleans so a failure never shows a secret, even a throwaway one.
    url_safe = re.fullmatch(r"[A-Za-z0-9_-]+", written["POSTGRES_PASSWORD"]) is not None
    assert url_safe, "password unsafe in a database URL"
    assert output.stat().st_mode & 0o777 == 0o600
    # Everything else is copied: the connections stay as in the example.
    assert written["AIRFLOW_CONN_CMS_DEFAULT"] == env_example()["AIRFLOW_CONN_CMS_DEFAULT"]

    resolved, errors = interpolate(compose, written)
    assert errors == []
    assert schema_errors(resolved) == []
    worker_key = environment_of(resolved["services"]["airflow-worker"])["AIRFLOW__CORE__FERNET_KEY"]
    same_key = worker_key == secrets["AIRFLOW_FERNET_KEY"]
    assert same_key, "the worker does not get the Fernet key from .env"


def test_make_env_leaves_an_existing_env_alone(tmp_path, capsys):
    make_env = import_make_env()
    output = tmp_path / ".env"
    output.write_text("AIRFLOW_FERNET_KEY=keep-me\n")
    assert make_env.main(["--example", str(ENV_EXAMPLE), "--output", str(output)]) == 1
    assert output.read_text() == "AIRFLOW_FERNET_KEY=keep-me\n"
    assert "--force" in capsys.readouterr().err
    assert make_env.main(["--example", str(ENV_EXAMPLE), "--output", str(output), "--force"]) == 0
    assert "keep-me" not in output.read_text()


def test_env_parser_follows_compose_quoting():
    parsed = parse_env_file("# c\nA=1 # note\nB='{\"x\": \"a b\"}'\nC=\"q\"\nexport D=d\n\n")
    assert parsed == {"A": "1", "B": '{"x": "a b"}', "C": "q", "D": "d"}
    with pytest.raises(ValueError, match="line 1"):
        parse_env_file("not an assignment\n")


# --------------------------------------------------------------------------------------------
# Tests: the Dockerfile


def test_dockerfile_image_matches_the_locked_airflow_and_python():
    instructions = dockerfile_instructions()
    froms = [args for instruction, args in instructions if instruction == "FROM"]
    assert len(froms) == 1, f"expected one FROM, found {froms}"
    match = re.fullmatch(r"apache/airflow:(?P<airflow>[\d.]+)-python(?P<python>\d+\.\d+)", froms[0])
    assert match, f"FROM {froms[0]} is not apache/airflow:<version>-python<x.y>"
    assert match["airflow"] == requirement_pin("apache-airflow")

    from packaging.specifiers import SpecifierSet

    requires = re.search(r'requires-python\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text())[1]
    assert match["python"] in SpecifierSet(requires), f"python{match['python']} outside requires-python {requires}"
    assert f"python{match['python']}" in (REPO / "Makefile").read_text(), "Makefile builds the venv on another Python"

    # Whatever pip installs is held to Airflow's constraints for the same Airflow and Python.
    text = " ".join(args for _, args in instructions)
    constraint_urls = set(re.findall(r"https://raw\.githubusercontent\.com/apache/airflow/\S+?\.txt", text))
    assert constraint_urls == {f"https://raw.githubusercontent.com/apache/airflow/constraints-{match['airflow']}"
                               f"/constraints-{match['python']}.txt"}
    for run in (args for instruction, args in instructions if instruction == "RUN" and "pip install" in args):
        assert "--constraint" in run and f'"apache-airflow=={match["airflow"]}"' in run, run


def test_dockerfile_copy_sources_exist_and_hold_files():
    copies = [args for instruction, args in dockerfile_instructions() if instruction == "COPY"]
    assert copies, "the Dockerfile copies nothing into the image"
    for args in copies:
        words = [w for w in args.split() if not w.startswith("--")]
        for source in words[:-1]:
            path = REPO / source
            assert path.exists(), f"COPY {source}: no such path in the repository"
            if path.is_dir():
                files = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
                # Git keeps no empty folders, so an empty one would be missing in a fresh clone.
                assert files, f"COPY {source}: folder is empty"


def test_dockerfile_checks_the_plugins_import_at_build_time():
    instructions = dockerfile_instructions()
    copies = {args.split()[-1].rstrip("/") for instruction, args in instructions if instruction == "COPY"}
    assert f"{AIRFLOW_HOME}/plugins" in copies
    check = [args for instruction, args in instructions
             if instruction == "RUN" and "import provisioning, civicrm_hooks, cms_operators" in args]
    assert check and f"PYTHONPATH={AIRFLOW_HOME}/plugins" in check[0]
    # The same import, here, with the same path: the build step passes for the current code.
    env = dict(os.environ, PYTHONPATH=str(REPO / "plugins"))
    result = subprocess.run([sys.executable, "-c", "import provisioning, civicrm_hooks, cms_operators"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_dockerfile_compiles_the_copied_code_after_copying_it():
    """Task processes import our modules from the image: their bytecode is written at build time."""
    instructions = dockerfile_instructions()
    copied = [i for i, (instruction, args) in enumerate(instructions)
              if instruction == "COPY" and args.split()[-1].rstrip("/") in (f"{AIRFLOW_HOME}/plugins",
                                                                            f"{AIRFLOW_HOME}/dags")]
    compiles = [i for i, (instruction, args) in enumerate(instructions)
                if instruction == "RUN" and "compileall" in args
                and f"{AIRFLOW_HOME}/plugins" in args and f"{AIRFLOW_HOME}/dags" in args]
    assert len(copied) == 2 and compiles and compiles[0] > max(copied)
    # The same compile, here: the build step passes for the current code (a syntax error fails it).
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "plugins"),
                                 str(REPO / "dags")], cwd=REPO, capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, PYTHONPYCACHEPREFIX=folder))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_every_worker_shares_one_volume_for_the_run_files(compose):
    """A batch planned on one worker replica is read by another: the run files' default folder is one named
    volume, mounted in every Airflow container and made the task user's alone by airflow-init."""
    mount = "cmsuser-runs:/opt/airflow/cmsuser_runs"
    assert "cmsuser-runs" in compose["volumes"]
    for name in airflow_services(compose):
        assert mount in compose["services"][name]["volumes"], name
    init = "\n".join(compose["services"]["airflow-init"]["command"])
    assert "chmod 700 /opt/airflow/cmsuser_runs" in init
