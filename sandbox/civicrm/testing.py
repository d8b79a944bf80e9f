"""pytest fixtures around the CiviCRM emulator; test modules and conftest files import them by name.

`civicrm`        a started emulator with STANDARD_SEED, fresh random keys (function scope, ~ms to start)
`civicrm_conn`   AIRFLOW_CONN_CIVICRM_DEFAULT pointing at that emulator (env var: no metadata DB needed)
`real_civicrm`   a real CiviCRM 5.76 in Debian's WordPress for the whole session (sandbox/real_civicrm),
                 started from the archive in ../shared/thirdparty (or $CMSUSER_THIRDPARTY); skipped
                 with the reason when it cannot start, a failure under CMSUSER_REQUIRE_REAL=1
`civicrm_site`   the contract suite's sites: the emulator and that real CiviCRM (or, instead, the one
                 CIVICRM_CONTRACT_URL with CIVICRM_CONTRACT_API_KEY and CIVICRM_CONTRACT_SITE_KEY
                 name); on a real site tests create uniquely named records and delete them afterwards
`emulator_site`  the same, skipped on a real site (for state only the emulator can arrange)
"""

from __future__ import annotations

import copy
import json
import os
import secrets

import pytest
import requests

from .server import CiviCRMEmulator

# One row per situation the queries care about. Groups: 5 static with child 6, 7 smart (4 and 9 match,
# 9 opted out), 8 an inactive smart group. Contact 10 is in the trash, 7 is linked to CMS user 17.
STANDARD_SEED: dict = {
    "contacts": [
        {"id": 2, "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.org",
         "preferred_language": "en_US"},
        {"id": 3, "first_name": "Grace", "last_name": "Hopper", "do_not_email": True},
        {"id": 4, "first_name": "Alan", "last_name": "Turing", "email": "alan@example.org"},
        {"id": 5, "first_name": "Edgar", "last_name": "Late", "email": "edgar@example.org", "is_deceased": True},
        {"id": 6, "first_name": "Katherine", "last_name": "Johnson",
         "emails": [{"email": "kj@work.example", "is_primary": False, "location_type_id": 2},
                    {"email": "kj@home.example", "is_primary": True}]},
        {"id": 7, "first_name": "Larry", "last_name": "Linked", "email": "larry@example.org"},
        {"id": 8, "contact_type": "Organization", "organization_name": "Acme Ltd", "email": "info@acme.example"},
        {"id": 9, "first_name": "Olga", "last_name": "Optout", "email": "olga@example.org"},
        {"id": 10, "first_name": "Trish", "last_name": "Trashed", "email": "trish@example.org", "is_deleted": True},
    ],
    "groups": [
        {"id": 5, "name": "new_members", "title": "New members"},
        {"id": 6, "name": "new_members_child", "title": "New members (child)", "parents": [5]},
        {"id": 7, "name": "volunteers_smart", "title": "Volunteers (smart)", "saved_search_id": 1, "members": [4, 9]},
        {"id": 8, "name": "old_smart", "title": "Old smart group", "saved_search_id": 2, "is_active": False,
         "members": [2]},
    ],
    "group_contacts": [
        {"contact_id": 2, "group_id": 5, "status": "Added"},
        {"contact_id": 3, "group_id": 5, "status": "Removed"},
        {"contact_id": 10, "group_id": 5, "status": "Added"},
        {"contact_id": 6, "group_id": 6, "status": "Added"},
        {"contact_id": 9, "group_id": 7, "status": "Removed"},
    ],
    "tags": [{"id": 3, "name": "needs_login", "label": "Needs login"},
             {"id": 4, "name": "login_created", "label": "Login created"}],
    "entity_tags": [{"entity_id": 2, "tag_id": 3}, {"entity_id": 4, "tag_id": 3}],
    "uf_matches": [{"contact_id": 7, "uf_id": 17, "uf_name": "larry@example.org", "domain_id": 1}],
}


@pytest.fixture
def civicrm():
    """A started emulator seeded with STANDARD_SEED; fails the test if the emulator itself raised."""
    emulator = CiviCRMEmulator(api_key="key-" + secrets.token_hex(8), site_key="site-" + secrets.token_hex(8))
    emulator.seed(copy.deepcopy(STANDARD_SEED))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
    if emulator.internal_errors:
        raise AssertionError(f"the CiviCRM emulator raised: {emulator.internal_errors!r}")


def connection_json(emulator: CiviCRMEmulator, **extra) -> str:
    """The AIRFLOW_CONN_... value (JSON form) for an emulator; extra keys override the defaults."""
    conn_extra = {"site_key": emulator.site_key} if emulator.site_key else {}
    conn_extra.update(extra)
    return json.dumps({"conn_type": "http", "host": emulator.url, "password": emulator.api_key,
                       "extra": conn_extra})


@pytest.fixture
def civicrm_conn(civicrm, monkeypatch):
    """Connection `civicrm_default` for the `civicrm` emulator, from an environment variable."""
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", connection_json(civicrm))
    return "civicrm_default"


SITES = ["emulator", "real"]


@pytest.fixture(scope="session")
def real_civicrm():
    """The session's real CiviCRM (started once, ~15 s; stopped and deleted at the end)."""
    from sandbox import real_civicrm as real

    problem = real.unavailable()
    if problem:
        if os.environ.get("CMSUSER_REQUIRE_REAL") == "1":
            pytest.fail(f"real CiviCRM tier: {problem}; CMSUSER_REQUIRE_REAL=1 requires it")
        pytest.skip(f"real CiviCRM tier: {problem}")
    site = real.RealCiviCRM.start()
    print(f"\nreal CiviCRM {site.state.get('civicrm_version')} up in {site.started_seconds:.1f}s at {site.base_url}",
          flush=True)
    try:
        yield site
    finally:
        site.stop()


class Site:
    """One CiviCRM endpoint, spoken to with plain requests exactly as the contract describes."""

    def __init__(self, name: str, template: str, api_key: str, site_key: str | None, emulator=None):
        self.name, self.template, self.api_key, self.site_key = name, template, api_key, site_key
        self.emulator = emulator
        self.session = requests.Session()
        self.tag = secrets.token_hex(4)  # keeps names unique on a shared real site
        self._created: list[tuple[str, int]] = []

    def url(self, entity: str, action: str) -> str:
        return self.template.replace("{entity}", entity).replace("{action}", action)

    def headers(self, **overrides) -> dict:
        headers = {"X-Civi-Auth": f"Bearer {self.api_key}", "X-Requested-With": "XMLHttpRequest"}
        if self.site_key:
            headers["X-Civi-Key"] = self.site_key
        headers.update(overrides)
        return {k: v for k, v in headers.items() if v is not None}

    def post(self, entity: str, action: str, params=None, *, headers=None, **extra_fields) -> requests.Response:
        data = {"params": json.dumps(params if params is not None else {}), **extra_fields}
        return self.session.post(self.url(entity, action), data=data,
                                 headers=self.headers() if headers is None else headers, timeout=30)

    def api(self, entity: str, action: str, params=None) -> dict:
        response = self.post(entity, action, params)
        assert response.status_code == 200, (response.status_code, response.text[:500])
        return response.json()

    def values(self, entity: str, action: str, params=None) -> list:
        return self.api(entity, action, params)["values"]

    def ids(self, entity: str, where: list, **params) -> set[int]:
        return {row["id"] for row in self.values(entity, "get", {"select": ["id"], "where": where, **params})}

    def error(self, entity: str, action: str, params=None, status: int = 500) -> str:
        """Assert the call fails with `status` and the JSON error shape; return error_message."""
        response = self.post(entity, action, params)
        assert response.status_code == status, (response.status_code, response.text[:500])
        body = response.json()
        assert {"error_code", "error_message"} <= set(body), body
        assert body.get("status", status) == status
        return body["error_message"]

    def create(self, entity: str, values: dict) -> dict:
        row = self.values(entity, "create", {"values": values})[0]
        self.track(entity, row["id"])
        return row

    def track(self, entity: str, *ids: int) -> None:
        self._created += [(entity, i) for i in ids]

    def contact(self, **values) -> dict:
        values.setdefault("contact_type", "Individual")
        values.setdefault("last_name", self.unique("Contract"))
        return self.create("Contact", values)

    def unique(self, prefix: str) -> str:
        return f"{prefix}{self.tag}"

    @property
    def me(self) -> int:
        return self.values("Contact", "get", {"select": ["id"], "where": [["id", "=", "user_contact_id"]]})[0]["id"]

    def cleanup(self) -> None:
        if self.emulator is not None:
            return  # the emulator dies with the test
        for entity, row_id in reversed(self._created):
            params = {"where": [["id", "=", row_id]]}
            if entity == "Contact":
                params["useTrash"] = False
            self.post(entity, "delete", params)


@pytest.fixture(params=SITES)
def civicrm_site(request):
    if request.param == "emulator":
        emulator = request.getfixturevalue("civicrm")
        site = Site("emulator", emulator.endpoint_template, emulator.api_key, emulator.site_key, emulator)
    elif os.environ.get("CIVICRM_CONTRACT_URL"):
        site = Site("real", os.environ["CIVICRM_CONTRACT_URL"], os.environ["CIVICRM_CONTRACT_API_KEY"],
                    os.environ.get("CIVICRM_CONTRACT_SITE_KEY") or None)
    else:
        # the contract is the API's behaviour, not the pipeline's permissions: the admin's key may
        # create contacts and groups, which the pipeline's API user may not
        real = request.getfixturevalue("real_civicrm")
        site = Site("real", real.api4_url, real.admin_api_key, real.site_key)
    try:
        yield site
    finally:
        site.cleanup()
        site.session.close()


@pytest.fixture
def emulator_site(civicrm):
    """For the emulator's own switches (seeded smart groups, permissions, AuthX settings, error modes)."""
    site = Site("emulator", civicrm.endpoint_template, civicrm.api_key, civicrm.site_key, civicrm)
    try:
        yield site
    finally:
        site.session.close()


class FaultySite(Site):
    """A Site whose calls can be made to fail: the emulator's own injection, or a fault-injecting
    proxy (sandbox.faultproxy) in front of the real CiviCRM, with one `inject` for both."""

    def __init__(self, *args, injector, **kwargs):
        super().__init__(*args, **kwargs)
        self._injector = injector

    def inject(self, *, entity: str, action: str, status: int | None = 500, lose_answer: bool = False,
               times: int = 1) -> None:
        self._injector.inject(entity=entity, action=action, status=status, lose_answer=lose_answer, times=times)


@pytest.fixture(params=SITES)
def faulty_site(request):
    if request.param == "emulator":
        emulator = request.getfixturevalue("civicrm")
        site = FaultySite("emulator", emulator.endpoint_template, emulator.api_key, emulator.site_key, emulator,
                          injector=emulator)
        proxy = None
    else:
        from sandbox.faultproxy import FaultProxy

        real = request.getfixturevalue("real_civicrm")
        proxy = FaultProxy(real.base_url)
        proxy.start()
        site = FaultySite("real", real.api4_url.replace(real.base_url, proxy.url), real.admin_api_key,
                          real.site_key, injector=proxy)
    try:
        yield site
    finally:
        site.cleanup()
        site.session.close()
        if proxy is not None:
            proxy.stop()
