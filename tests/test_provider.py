"""The project as an Airflow provider (plugins/cmsuser_provider.py, pyproject.toml's entry point).

What is checked: the provider info is valid under Airflow's own schemas and is built from the CMS
registry; the installed entry point resolves in a plain process (no PYTHONPATH, another plugins
folder), as it does for an existing Airflow; ProvidersManager lists `civicrm` and `wordpress` with our
hooks, labels, form fields and field behaviours, and the UI's hook-meta data shows the forms; the
connection-test endpoint (the UI's Test button) runs our hooks' `test_connection()` against the
emulators, in-process on the session's SQLite Airflow and, in the real-Airflow tier, on the real
api-server; the wheel holds every module of plugins/; the Dockerfile's provider check passes here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

import cmsuser_provider
from cms_operators import registry
from tests.conftest import require_real

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
STANDARD_FIELDS = {"description", "host", "port", "login", "password", "schema", "extra"}
#: connection type -> (hook class, conn_name_attr, default_conn_name)
EXPECTED_HOOKS = {
    "civicrm": ("civicrm_hooks.hook.CiviCRMHook", "civicrm_conn_id", "civicrm_default"),
    "wordpress": ("cms_operators.wordpress.hook.WordPressHook", "cms_conn_id", "cms_default"),
}
EXPECTED_EXTRAS = {"civicrm": {"site_key", "api4_url", "verify", "timeout"},
                   "wordpress": {"rest_url", "verify", "timeout"}}
#: requirements.in entries that are the deployment's (metadata database drivers, the executor), not the code's
DEPLOYMENT_ONLY = {"psycopg2-binary", "asyncpg", "apache-airflow-providers-celery"}


def _schema(name: str) -> dict:
    return json.loads(resources.files("airflow").joinpath(name).read_text())


def _types(info: dict | None = None) -> dict[str, dict]:
    info = info if info is not None else cmsuser_provider.get_provider_info()
    return {entry["connection-type"]: entry for entry in info["connection-types"]}


def _import(dotted: str):
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _plain_env(tmp_path: Path) -> dict[str, str]:
    """A process as an existing Airflow runs one: no PYTHONPATH, a plugins folder without our code."""
    plugins = tmp_path / "other_plugins"
    plugins.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow_home"), AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
               AIRFLOW__CORE__LOAD_EXAMPLES="False")
    return env


# ------------------------------------------------------------------------------ the provider info


def test_provider_info_is_valid_under_airflows_schemas():
    info = cmsuser_provider.get_provider_info()
    # what ProvidersManager validates every provider's info with at run time
    jsonschema.validate(info, _schema("provider_info.schema.json"))
    # the stricter provider.yaml schema knows the shapes of conn-fields and ui-field-behaviour
    strict = _schema("provider.yaml.schema.json")["properties"]["connection-types"]
    jsonschema.validate(info["connection-types"], strict)
    # the field behaviours as ProvidersManager converts and validates them (a failure there is only a warning)
    behaviours = _schema("customized_form_field_behaviours.schema.json")
    for entry in info["connection-types"]:
        ui = entry["ui-field-behaviour"]
        jsonschema.validate({"hidden_fields": ui["hidden-fields"], "relabeling": ui["relabeling"],
                             "placeholders": ui["placeholders"]}, behaviours)
    assert info["package-name"] == "cmsuser-airflow"
    assert info["versions"] == [cmsuser_provider.__version__]
    assert info["name"] and info["description"]


def test_connection_types_are_civicrm_and_one_per_registered_cms():
    types = _types()
    assert list(types) == ["civicrm", *registry.cms_types()]
    assert types["civicrm"]["hook-class-name"] == "civicrm_hooks.hook.CiviCRMHook"
    for name, kind in registry.cms_types().items():
        entry = types[name]
        assert entry["hook-class-name"] == kind.hook_class
        assert entry["hook-name"] == kind.label
        assert entry["conn-fields"] == kind.connection["conn-fields"]
        assert entry["ui-field-behaviour"] == kind.connection["ui-field-behaviour"]


def test_a_new_cms_package_appears_without_editing_the_provider(monkeypatch):
    wordpress = registry.get("wordpress")
    drupal = registry.CmsType(
        name="drupal", label="Drupal", rules=wordpress.rules, hook_class="cms_operators.drupal.hook.DrupalHook",
        backend_class="cms_operators.drupal.backend.DrupalBackend",
        connection={"ui-field-behaviour": {"hidden-fields": ["schema"], "relabeling": {}, "placeholders": {}}})
    monkeypatch.setattr(registry, "cms_types", lambda: {"wordpress": wordpress, "drupal": drupal})
    types = _types()
    assert list(types) == ["civicrm", "wordpress", "drupal"]
    assert types["drupal"] == {"connection-type": "drupal", "hook-class-name": "cms_operators.drupal.hook.DrupalHook",
                               "hook-name": "Drupal",
                               "ui-field-behaviour": {"hidden-fields": ["schema"], "relabeling": {}, "placeholders": {}}}


def test_a_broken_cms_package_costs_only_the_cms_types_not_airflows_provider_discovery(monkeypatch, caplog):
    def broken():
        raise ImportError("cms_operators.drupal: No module named 'drupal_sdk'")

    monkeypatch.setattr(registry, "cms_types", broken)
    with caplog.at_level(logging.ERROR, logger="cmsuser_provider"):
        info = cmsuser_provider.get_provider_info()  # Airflow does not catch what this raises
    assert list(_types(info)) == ["civicrm"]
    assert "CMS registry did not load" in caplog.text and "drupal_sdk" in caplog.text


def test_provider_info_is_a_fresh_copy_each_time():
    # ProvidersManager rewrites placeholders in place; the registry's CmsType must not change with it
    first = cmsuser_provider.get_provider_info()
    first["connection-types"][1]["ui-field-behaviour"]["placeholders"]["extra__x"] = "changed"
    assert "extra__x" not in registry.get("wordpress").connection["ui-field-behaviour"]["placeholders"]
    assert cmsuser_provider.get_provider_info() != first


def test_provider_info_imports_no_airflow():
    code = ("import sys, cmsuser_provider; cmsuser_provider.get_provider_info(); "
            "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))")
    env = dict(os.environ, PYTHONPATH=str(PLUGINS))
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=PLUGINS, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("conn_type", list(_types()))  # every type, also a CMS registered later
def test_each_form_fits_its_hook(conn_type):
    entry = _types()[conn_type]
    # a CMS's hook takes the CMS connection (docs/adding-a-cms.md)
    hook_class, conn_name_attr, default_conn_name = EXPECTED_HOOKS.get(
        conn_type, (entry["hook-class-name"], "cms_conn_id", "cms_default"))
    assert entry["hook-class-name"] == hook_class
    hook = _import(hook_class)
    assert hook.conn_type == conn_type
    assert hook.conn_name_attr == conn_name_attr and hook.default_conn_name == default_conn_name
    assert entry["hook-name"] == hook.hook_name  # the UI shows one name, before and after the hook is imported
    assert callable(hook.test_connection)

    fields, ui = entry["conn-fields"], entry["ui-field-behaviour"]
    assert set(fields) == EXPECTED_EXTRAS.get(conn_type, set(fields))
    assert not set(fields) & STANDARD_FIELDS
    for name, field in fields.items():
        assert field["label"] and field["description"], name
        assert "null" in field["schema"]["type"], f"{name}: an empty field must be allowed (the hook has a default)"
        assert "default" not in field["schema"], f"{name}: the hook's default applies; the form writes none"
    # what the hook treats as a secret is a password field in the form
    password_fields = {name for name, field in fields.items() if field["schema"].get("format") == "password"}
    assert set(getattr(hook, "secret_extras", ())) <= password_fields
    # the standard fields: only real ones, nothing said about a hidden one, host/password always shown
    hidden = set(ui["hidden-fields"])
    assert hidden <= STANDARD_FIELDS and "schema" in hidden and not {"host", "password"} & hidden
    assert set(ui["relabeling"]) <= STANDARD_FIELDS - hidden
    assert set(ui["placeholders"]) <= STANDARD_FIELDS - hidden
    kind = registry.cms_types().get(conn_type)
    if kind is not None and "ssh" in kind.generic_connection_types:  # a server reached over SSH, on its port
        assert "port" not in hidden and ui["relabeling"]["host"].startswith("SSH host")
    else:  # a site URL carries its scheme and port
        assert "port" in hidden
        assert ui["relabeling"]["host"] == "Site URL" and ui["placeholders"]["host"].startswith("https://")


# ------------------------------------------------------------------------------ installed and discovered

DISCOVERY = r"""
import json, warnings
from importlib.metadata import entry_points
warnings.simplefilter("ignore")
(ep,) = [ep for ep in entry_points(group="apache_airflow_provider") if ep.dist.metadata["name"] == "cmsuser-airflow"]
info = ep.load()()
from airflow.providers_manager import ProvidersManager
pm = ProvidersManager()
hooks = {}
for conn_type in ("civicrm", "wordpress", "http"):
    hook = pm.hooks.get(conn_type)
    hooks[conn_type] = None if hook is None else {
        "hook_class_name": hook.hook_class_name, "connection_id_attribute_name": hook.connection_id_attribute_name,
        "package_name": hook.package_name, "hook_name": hook.hook_name, "connection_testable": hook.connection_testable}
print("DISCOVERY " + json.dumps({
    "entry_point": ep.value, "dist_version": ep.dist.version, "info": info,
    "provider_version": pm.providers["cmsuser-airflow"].version, "hooks": hooks,
    "module_file": __import__("cmsuser_provider").__file__}))
"""


def _last_json(stdout: str, tag: str):
    lines = [line for line in stdout.splitlines() if line.startswith(tag + " ")]
    assert lines, f"no {tag} line in the output:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len(tag) + 1:])


def test_entry_point_is_installed_and_airflow_finds_our_hooks_without_the_plugins_folder(tmp_path):
    """As an existing Airflow gets it from `pip install`: `make venv` installs the project (editable)."""
    result = subprocess.run([sys.executable, "-c", DISCOVERY], env=_plain_env(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"{result.stderr[-3000:]}\nIs the project installed? `make venv` (or `uv pip install -e .`) installs it.")
    found = _last_json(result.stdout, "DISCOVERY")
    assert found["entry_point"] == "cmsuser_provider:get_provider_info"
    assert Path(found["module_file"]).resolve() == (PLUGINS / "cmsuser_provider.py").resolve()
    # the installed metadata is not stale: same version, and the same provider info as this checkout's
    assert found["dist_version"] == found["provider_version"] == cmsuser_provider.__version__
    assert found["info"] == cmsuser_provider.get_provider_info()
    for conn_type, (hook_class, conn_name_attr, _) in EXPECTED_HOOKS.items():
        assert found["hooks"][conn_type] == {
            "hook_class_name": hook_class, "connection_id_attribute_name": conn_name_attr,
            "package_name": "cmsuser-airflow", "hook_name": _types()[conn_type]["hook-name"],
            "connection_testable": True}
    assert found["hooks"]["http"]["package_name"] == "apache-airflow-providers-http"  # http stays http


@pytest.fixture(scope="module")
def providers():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_providers_manager_lists_our_hooks(providers):
    assert "cmsuser-airflow" in providers.providers
    for conn_type, (hook_class, conn_name_attr, _) in EXPECTED_HOOKS.items():
        hook = providers.hooks[conn_type]
        assert hook is not None, f"{conn_type}: the hook did not import (see the log)"
        assert (hook.hook_class_name, hook.connection_id_attribute_name, hook.package_name) == (
            hook_class, conn_name_attr, "cmsuser-airflow")
        assert hook.hook_name == _types()[conn_type]["hook-name"] and hook.connection_testable


def test_providers_manager_has_our_form_fields(providers):
    widgets = providers.connection_form_widgets
    for conn_type, entry in _types().items():
        ours = {key: w for key, w in widgets.items() if key.startswith(f"extra__{conn_type}__")}
        assert set(ours) == {f"extra__{conn_type}__{name}" for name in entry["conn-fields"]}
        for name, field in entry["conn-fields"].items():
            widget = ours[f"extra__{conn_type}__{name}"]
            assert widget.package_name == "cmsuser-airflow" and widget.field_name == name
            assert widget.field["schema"]["title"] == field["label"]
            assert widget.field["schema"]["type"] == field["schema"]["type"]
            assert widget.field["description"] == field["description"]
            assert widget.is_sensitive == (field["schema"].get("format") == "password")
    assert widgets["extra__civicrm__site_key"].is_sensitive


def test_providers_manager_has_our_field_behaviours(providers):
    behaviours = providers.field_behaviours
    assert behaviours["civicrm"] == {
        "hidden_fields": ["schema", "port", "login"],
        "relabeling": {"host": "Site URL", "password": "API key"},
        "placeholders": {"host": "https://crm.example.org",
                         "password": "API key of the API contact (at most 32 characters)"}}
    assert behaviours["wordpress"]["hidden_fields"] == ["schema", "port"]
    assert behaviours["wordpress"]["relabeling"] == {"host": "Site URL", "login": "API user",
                                                     "password": "Application password"}


def test_the_ui_gets_our_forms():
    """What GET /ui/connections/hook_meta serves the connection form: titles, hidden fields, extras."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    meta = {m.connection_type: m for m in HookMetaService.hook_meta_data()}
    civicrm, wordpress = meta["civicrm"], meta["wordpress"]
    assert civicrm.hook_name == "CiviCRM APIv4" and wordpress.hook_name == "WordPress"
    assert civicrm.hook_class_name == "civicrm_hooks.hook.CiviCRMHook"
    std = civicrm.standard_fields
    assert std.url_schema.hidden and std.port.hidden and std.login.hidden
    assert (std.host.hidden, std.host.title, std.host.placeholder) == (False, "Site URL", "https://crm.example.org")
    assert (std.password.hidden, std.password.title) == (False, "API key")
    assert set(civicrm.extra_fields) == EXPECTED_EXTRAS["civicrm"]
    assert civicrm.extra_fields["site_key"]["schema"]["format"] == "password"
    assert civicrm.extra_fields["verify"]["schema"]["type"] == ["boolean", "string", "null"]
    std = wordpress.standard_fields
    assert std.url_schema.hidden and std.port.hidden and not std.login.hidden
    assert (std.login.title, std.password.title) == ("API user", "Application password")
    assert set(wordpress.extra_fields) == EXPECTED_EXTRAS["wordpress"]


# ------------------------------------------------------------------------------ the forms' values reach the hooks


def test_a_form_saved_with_empty_extras_leaves_the_hooks_defaults(monkeypatch):
    """The UI writes an empty field as null; both hooks then use their defaults and connect."""
    from civicrm_hooks.hook import CiviCRMHook
    from cms_operators.wordpress.hook import WordPressHook
    from sandbox.sites import started_sites

    with started_sites() as sites:
        creds = sites.secrets
        monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_FORM", json.dumps({
            "conn_type": "civicrm", "host": sites.civicrm.url, "password": creds["api_key"],
            "extra": {"site_key": creds["site_key"], "api4_url": None, "verify": None, "timeout": None}}))
        monkeypatch.setenv("AIRFLOW_CONN_CMS_FORM", json.dumps({
            "conn_type": "wordpress", "host": sites.cms.url, "login": "admin", "password": creds["app_password"],
            "extra": {"rest_url": None, "verify": None, "timeout": None}}))
        civicrm, wordpress = CiviCRMHook("civicrm_form"), WordPressHook("cms_form")
        try:
            assert civicrm.test_connection()[0], civicrm.test_connection()
            assert wordpress.test_connection() == (True, f"Authenticated as 'admin' at {sites.cms.url}/wp-json")
            assert (civicrm.timeout, wordpress.timeout) == (civicrm.default_timeout, wordpress.default_timeout)
            assert civicrm.endpoint.verify is True and wordpress.endpoint.verify is True
        finally:
            civicrm.close()
            wordpress.close()


# ------------------------------------------------------------------------------ the Test button

ENDPOINT = r"""
import json, os, sys, warnings
warnings.simplefilter("ignore")
from fastapi.testclient import TestClient
from airflow.utils import db
db.initdb()
from airflow.api_fastapi.app import create_app
client = TestClient(create_app("core"))
answers = []
for setting, body in json.loads(sys.stdin.read()):
    os.environ["AIRFLOW__CORE__TEST_CONNECTION"] = setting  # read on every request
    answer = client.post("/api/v2/connections/test", json=body)
    answers.append({"http": answer.status_code, **answer.json()})
print("ANSWERS " + json.dumps(answers))
"""


def _test_bodies(sites) -> dict[str, dict]:
    creds = sites.secrets
    civicrm = {"connection_id": "civicrm_ui", "conn_type": "civicrm", "host": sites.civicrm.url,
               "password": creds["api_key"], "extra": json.dumps({"site_key": creds["site_key"]})}
    return {
        "civicrm": civicrm,
        "civicrm, wrong key": {**civicrm, "password": "0" * 32},
        "civicrm as http": {**civicrm, "conn_type": "http"},
        "wordpress": {"connection_id": "cms_ui", "conn_type": "wordpress", "host": sites.cms.url,
                      "login": "admin", "password": creds["app_password"]},
    }


def _check_test_answers(answers: dict[str, dict], sites, contact_gets: list[int]) -> None:
    creds = sites.secrets
    assert answers["civicrm"]["http"] == 200
    assert answers["civicrm"]["status"] is True
    assert answers["civicrm"]["message"].startswith("Connected to CiviCRM as contact 1 ("), answers["civicrm"]
    wrong = answers["civicrm, wrong key"]
    assert wrong["status"] is False and "HTTP 401" in wrong["message"] and "0" * 32 not in wrong["message"]
    # a connection of type http gets Airflow's generic HTTP check, not our hook: no APIv4 call is made
    assert contact_gets == [200, 401], contact_gets
    assert answers["civicrm as http"]["status"] is False
    assert answers["wordpress"]["status"] is True
    assert answers["wordpress"]["message"] == f"Authenticated as 'admin' at {sites.cms.url}/wp-json"
    for name, answer in answers.items():
        for secret in creds.values():
            assert secret not in json.dumps(answer), f"{name}: a secret in the answer"


@pytest.mark.slow
def test_the_test_button_runs_our_hooks_test_connection(airflow_db, tmp_path):
    """POST /api/v2/connections/test, the UI's Test button, on an in-process api (the session's SQLite)."""
    from sandbox.sites import started_sites

    env = dict(os.environ,
               AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
               AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
               AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(tmp_path / "passwords.json"))
    env.pop("PYTHONPATH", None)  # the hooks come from the installed project, as in the api-server
    # a database of its own, migrated by the api process (ENDPOINT): the session's database is shared with
    # every other test of the session, and under the whole suite the api answered "Database error" on it
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path / 'airflow.db'}"
    with started_sites() as sites:
        bodies = _test_bodies(sites)
        requests = [["Enabled", body] for body in bodies.values()] + [["Disabled", bodies["civicrm"]]]
        result = subprocess.run([sys.executable, "-c", ENDPOINT], input=json.dumps(requests), env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        *answers, disabled = _last_json(result.stdout, "ANSWERS")
        contact_gets = [c.status for c in sites.civicrm.calls if (c.entity, c.action) == ("Contact", "get")]
        if any(answer.get("http") != 200 for answer in answers):  # say why the api failed
            print(result.stderr[-6000:])
        _check_test_answers(dict(zip(bodies, answers, strict=True)), sites, contact_gets)
    # without `[core] test_connection = Enabled` the endpoint refuses (the button is greyed out)
    assert disabled["http"] == 403 and "disabled" in disabled["detail"].lower()


@pytest.mark.real_airflow
@pytest.mark.slow
def test_real_api_server_tests_our_connections_and_serves_their_forms(tmp_path):
    """The same on Airflow's real api-server (PostgreSQL; the harness enables test_connection)."""
    from sandbox.real_airflow import RealAirflow, postgres_available
    from sandbox.sites import started_sites

    problem = postgres_available()
    if problem:
        if require_real():
            pytest.fail(f"{problem}; CMSUSER_REQUIRE_REAL=1 requires the real-Airflow tier to run")
        pytest.skip(problem)
    no_dags = tmp_path / "dags"
    no_dags.mkdir()
    started = time.monotonic()
    with started_sites() as sites, RealAirflow({}, dags_folder=no_dags, dag_ids=(), home=tmp_path / "home") as airflow:
        bodies = _test_bodies(sites)
        answers = {name: {"http": 200, **airflow.test_connection(body)} for name, body in bodies.items()}
        contact_gets = [c.status for c in sites.civicrm.calls if (c.entity, c.action) == ("Contact", "get")]
        _check_test_answers(answers, sites, contact_gets)
        meta = {m["connection_type"]: m for m in airflow._request("GET", "/ui/connections/hook_meta")}
        assert meta["civicrm"]["hook_class_name"] == "civicrm_hooks.hook.CiviCRMHook"
        assert meta["civicrm"]["standard_fields"]["host"]["title"] == "Site URL"
        assert meta["civicrm"]["standard_fields"]["login"]["hidden"] is True
        assert set(meta["civicrm"]["extra_fields"]) == EXPECTED_EXTRAS["civicrm"]
        assert meta["wordpress"]["standard_fields"]["password"]["title"] == "Application password"
        assert set(meta["wordpress"]["extra_fields"]) == EXPECTED_EXTRAS["wordpress"]
    print(f"\nreal api-server connection tests: {time.monotonic() - started:.1f}s", flush=True)


# ------------------------------------------------------------------------------ packaging


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirement_names(lines) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[\[=<>!~;\s]", line, maxsplit=1)[0].lower())
    return names


def test_pyproject_declares_the_provider_and_the_dependencies_of_requirements_in():
    project = _pyproject()["project"]
    assert project["name"] == cmsuser_provider.PACKAGE_NAME
    assert project["entry-points"]["apache_airflow_provider"] == {"provider_info": "cmsuser_provider:get_provider_info"}
    # the same function (Airflow's plugin loader may have imported plugins/*.py again under the same name,
    # so compare where it is defined rather than the object)
    target = _import(project["entry-points"]["apache_airflow_provider"]["provider_info"].replace(":", "."))
    assert (target.__module__, target.__qualname__, target.__code__.co_filename) == (
        "cmsuser_provider", "get_provider_info", cmsuser_provider.get_provider_info.__code__.co_filename)
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cmsuser_provider.__version__"}
    # the same top-level dependencies as requirements.in (which `make lock` pins), without the pins
    declared = _requirement_names(project["dependencies"])
    wanted = _requirement_names((REPO / "requirements.in").read_text().splitlines()) - DEPLOYMENT_ONLY
    assert declared == wanted
    # ... and the locked Airflow satisfies the range this package asks for
    from packaging.requirements import Requirement

    (airflow,) = [Requirement(d) for d in project["dependencies"] if d.startswith("apache-airflow>")]
    pinned = re.search(r"^apache-airflow==(\S+)", (REPO / "requirements.txt").read_text(), re.M)[1]
    assert pinned in airflow.specifier


@pytest.mark.slow
def test_the_wheel_holds_every_module_of_plugins_and_the_entry_point(tmp_path):
    """Built from a copy (the build writes into the source tree), with the uv that `make venv` installs."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copytree(PLUGINS, source / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    # .airflowignore is for an Airflow plugins folder (it keeps the plugin manager out), not the installed package
    expected = {str(p.relative_to(source / "plugins")) for p in (source / "plugins").rglob("*")
                if p.is_file() and p.name != ".airflowignore"}
    uv = Path(sys.executable).with_name("uv")
    result = subprocess.run([str(uv), "build", "--wheel", "-q", "-o", str(tmp_path / "dist"), "--python",
                             sys.executable, str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("cmsuser_airflow-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points_text = archive.read(entry_points).decode()
    assert expected - names == set(), "files of plugins/ missing from the wheel"
    assert {n for n in names if ".dist-info/" not in n} == expected, "the wheel holds files that are not in plugins/"
    assert f"cmsuser_airflow-{cmsuser_provider.__version__}-" in wheel.name
    assert "[apache_airflow_provider]\nprovider_info = cmsuser_provider:get_provider_info" in entry_points_text


def test_make_venv_installs_the_project_editable():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^\$\(STAMP\):(?P<deps>.*)\n(?P<body>(?:\t.*\n)+)", makefile, re.M)
    assert recipe and "pyproject.toml" in recipe["deps"], "a changed pyproject.toml must reinstall the project"
    assert re.search(r"\$\(BIN\)/uv pip install .*--python \$\(BIN\)/python -e \.\s*$", recipe["body"], re.M)


def test_dockerfile_installs_the_provider_and_checks_it_here_too(tmp_path):
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    runs = [line[4:] for line in text.splitlines() if line.startswith("RUN ")]
    installs = [i for i, run in enumerate(runs) if "--editable /opt/airflow " in run]
    checks = [i for i, run in enumerate(runs) if "providers['cmsuser-airflow']" in run]
    assert installs and checks and installs[0] < checks[0]
    assert re.search(r"^COPY \S+ pyproject\.toml /opt/airflow/pyproject\.toml$", text, re.M)
    check = runs[checks[0]]
    assert "PYTHONPATH" not in check  # it proves the install, not the plugins folder
    # the image's check, here: the installed project, no PYTHONPATH, no plugins folder of ours
    env = _plain_env(tmp_path)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["sh", "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"provider cmsuser-airflow: {sorted(_types())}" in result.stdout


def test_readme_documents_every_form_field():
    readme = (REPO / "README.md").read_text()
    assert "AIRFLOW__CORE__TEST_CONNECTION=Enabled" in readme
    for conn_type, entry in _types().items():
        assert f"`{conn_type}`" in readme
        for name in entry["conn-fields"]:
            assert f"`extra.{name}`" in readme, f"README: {conn_type} extra.{name} is not documented"
