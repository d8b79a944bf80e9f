"""What the nightly end-to-end tests against a real CMS share (test_nightly_real_<cms>.py, not yet
WordPress's or CiviCRM's): the demo seed's expected outcomes, a seeded CiviCRM emulator connected next
to the real site, and the scenarios every CMS runs alike. Each test file subclasses `RealBox` (or
`RealBoxWithBoss`, for a site seeded with an administrator) with its own clients and says how its
accounts read (`uid`, `mail_field`) and how its connection is made (`connection`).

Contact ids are those of sandbox/demo_seed.yaml (see tests/dags/test_nightly.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import pytest
import yaml

from sandbox import local_airflow
from sandbox.civicrm import CiviCRMEmulator
from sandbox.faultproxy import FaultProxy
from sandbox.sites import DEMO_SEED
from tests.dags.conftest import Sandbox

CREATED = {2: "ada.lovelace", 3: "grace.hopper", 4: "alan.turing", 5: "zoe.angstrom", 11: "sam.family",
           16: "john.smith2"}
EMAILS = {2: "ada@example.org", 3: "grace@example.org", 4: "alan@example.org", 5: "zoe@example.org",
          6: "jane.doe@example.org", 11: "family@example.org", 16: "john.smith@example.org"}
#: One password mail per new account, none for Grace (do_not_email), none for anyone else.
MAILED = {EMAILS[cid]: 1 for cid in CREATED if cid != 3}
#: 14: admin@example.test is the site's own administrator (uid 1, Joomla's Super User).
FAILED = {8: "no primary email", 9: "invalid email", 10: "invalid email 'lena.", 12: "contact 11", 13: "deceased",
          14: "administrator"}
#: A triggered contact whose email is that of an administrator account the test makes (`seed_with_boss`).
BOSS = {"id": 17, "first_name": "Bea", "last_name": "Boss", "email": "Boss@Example.org"}
LANGUAGES = {2: "fr_FR", 4: "de_DE"}  # the sites have en and fr


def accounts_with_boss(boss_role: str) -> list[dict]:
    """The demo seed's accounts for a Drupal-like site, and `the.boss` (an administrator by `boss_role`)
    with Bea's email."""
    return [
        {"name": "larry", "mail": "larry@example.org", "roles": ["member"]},
        {"name": "jane.doe", "mail": "jane.doe@example.org"},
        {"name": "john.smith", "mail": "jsmith@elsewhere.example"},
        {"name": "the.boss", "mail": "boss@example.org", "roles": [boss_role]},
    ]


def demo_seed() -> dict:
    """The demo seed's CiviCRM part."""
    return yaml.safe_load(DEMO_SEED.read_text())["civicrm"]


def seed_with_boss(larry_uid: int) -> dict:
    """The demo seed with Ada's and Alan's LANGUAGES, BOSS triggered (group 5), and Larry's link pointed
    at the uid his account really got (uids are not reused across resets)."""
    seed = demo_seed()
    for contact in seed["contacts"]:
        if contact["id"] in LANGUAGES:
            contact["preferred_language"] = LANGUAGES[contact["id"]]
    seed["contacts"].append(dict(BOSS))
    seed["group_contacts"].append({"group_id": 5, "contact_id": BOSS["id"], "status": "Added"})
    (larry,) = seed["uf_matches"]
    larry["uf_id"] = larry_uid
    return seed


def cms_connection(host: str, login: str, password: str, cms_type: str, **extra) -> str:
    """AIRFLOW_CONN_CMS_DEFAULT for a web API CMS, as local_airflow.connection_env writes it."""
    env = local_airflow.connection_env("", "", None, host, login, password, cms_type=cms_type,
                                       cms_extra=extra or None)
    return env["AIRFLOW_CONN_CMS_DEFAULT"]


def mail_address(mail: dict) -> str:
    """The one address a captured mail went to, lower-cased."""
    (address,) = re.findall(r"[\w.+-]+@[\w.-]+", mail["to"])
    return address.lower()


@dataclass
class RealBox:
    """The emulated CiviCRM (`box`) and the real site a test runs the nightly DAG between."""

    box: Sandbox
    site: object            # the sandbox.real_<cms> handle
    stack: ExitStack        # closed after the test: the emulator, any proxy
    monkeypatch: pytest.MonkeyPatch

    failed: ClassVar[dict[int, str]] = FAILED  # the contacts the run fails, and words of their reason
    mail_field: ClassVar[str] = "mail"

    def uid(self, account: dict) -> int:
        raise NotImplementedError

    def connection(self, host: str) -> str:
        """The CMS connection to `host` (the site's address, or a proxy's in front of it)."""
        raise NotImplementedError

    def connect(self, cms: str) -> None:
        self.monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", cms)

    def through_proxy(self) -> FaultProxy:
        """A FaultProxy in front of the site; the CMS connection's host now points at it."""
        proxy = self.stack.enter_context(FaultProxy(self.site.base_url))
        self.connect(self.connection(proxy.url))
        return proxy

    def with_email(self, users: dict[str, dict], email: str) -> list[dict]:
        return [u for u in users.values() if u[self.mail_field].lower() == email]

    def outcomes_ok(self, run, outcomes) -> None:
        assert str(run.state).endswith("success")
        assert {cid: row["username"] for cid, row in outcomes.items() if row["outcome"] == "created"} == CREATED
        for cid, words in self.failed.items():
            assert outcomes[cid]["outcome"] == "failed" and words in outcomes[cid]["reason"], outcomes[cid]
        assert outcomes[7]["outcome"] == "already_linked"
        assert outcomes[6]["outcome"] == "linked_existing" and outcomes[6]["username"] == "jane.doe"

    def created_linked(self, users: dict[str, dict], outcomes) -> None:
        """Each new account is linked to its contact, and the outcome and activity name its uid."""
        links = self.box.ufmatch()
        for cid, username in CREATED.items():
            uid = self.uid(users[username])
            assert links[cid]["uf_id"] == uid == outcomes[cid]["uf_id"]
            assert self.box.activities(cid)[0]["subject"] == f"Created : {username} ({uid})"

    def one_account_each(self, users: dict[str, dict]) -> None:
        """Every created contact has exactly one account with its email, and is linked to it."""
        links = self.box.ufmatch()
        for cid, username in CREATED.items():
            assert links[cid]["uf_id"] == self.uid(users[username])
            assert len(self.with_email(users, EMAILS[cid])) == 1

    def mails_by_address(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for mail in self.site.mails():
            address = mail_address(mail)
            found[address] = found.get(address, 0) + 1
        return found

    def mails_to(self) -> dict[str, dict]:
        return {mail_address(mail): mail for mail in self.site.mails()}

    # --- scenarios every CMS runs the same way

    def lose_a_create_answer(self, create_path: str, probe_status: int, created_status: int):
        """Runs the DAG with a proxy that forwards Ada's create and drops the client's connection: pre-flight's
        probe (refused by design) then one post per account, Ada's lost and never sent again.
        Returns (proxy, outcomes)."""
        proxy = self.through_proxy()
        proxy.inject(method="POST", path=create_path, body_contains="ada@example.org", lose_answer=True, times=1)
        run, outcomes = self.box.run()
        self.outcomes_ok(run, outcomes)
        assert proxy.pending_faults == 0
        creates = [(c.lost, c.target_status) for c in proxy.calls if c.method == "POST" and c.path == create_path]
        assert creates[0] == (False, probe_status)
        assert sorted(creates[1:]) == [(False, created_status)] * (len(CREATED) - 1) + [(True, created_status)]
        return proxy, outcomes

    def email_taken_after_planning(self, backend: type, register: Callable[[], int]):
        """Runs the DAG with `register` (somebody taking Alan's email on the site, returning the new uid)
        called just before Alan's create: the CMS refuses the create, the batch looks the email up and
        links that account as existing. Returns (outcomes, that uid)."""
        original = backend.create_user
        raced: list[int] = []

        def create_user(backend_self, **kwargs):
            if kwargs["email"].lower() == "alan@example.org" and not raced:
                raced.append(register())
            return original(backend_self, **kwargs)

        self.monkeypatch.setattr(backend, "create_user", create_user)
        run, outcomes = self.box.run()
        assert str(run.state).endswith("success") and raced
        assert (outcomes[4]["outcome"], outcomes[4]["username"], outcomes[4]["uf_id"]) == (
            "linked_existing", "alan.elsewhere", raced[0])
        assert self.box.ufmatch()[4]["uf_id"] == raced[0]
        assert "alan@example.org" not in self.mails_by_address()
        assert {cid for cid, row in outcomes.items() if row["outcome"] == "created"} == set(CREATED) - {4}
        return outcomes, raced[0]

    def second_run_changes_nothing(self, accounts: Callable[[], object]) -> None:
        """After a first run, a second one changes no account (as `accounts()` reads them), sends no mail,
        and fails every contact left on the triggers, in their second attempt."""
        before = accounts()
        mails = len(self.site.mails())
        run, outcomes = self.box.run()
        assert str(run.state).endswith("success")
        assert accounts() == before
        assert len(self.site.mails()) == mails
        assert {row["outcome"] for row in outcomes.values()} == {"failed"}
        assert all(row["attempt"] == 2 for row in outcomes.values())


@dataclass
class RealBoxWithBoss(RealBox):
    """A site seeded with `accounts_with_boss` and CiviCRM with `seed_with_boss`."""

    existing: dict[str, int]  # name -> uid of the accounts made before the run

    failed = {**FAILED, 17: "administrator"}  # Bea: the.boss's email

    def existing_left_alone(self, before: dict[str, dict], users: dict[str, dict], outcomes) -> None:
        """jane.doe is linked (the contact's email differs only in case), Larry keeps his link, no
        administrator is linked (uid 1: Adam's email; the.boss: Bea's), and no account that was there
        changed in any attribute."""
        links = self.box.ufmatch()
        assert links[6]["uf_id"] == self.existing["jane.doe"] == outcomes[6]["uf_id"]
        for name in ("jane.doe", "john.smith", "larry", "the.boss", "admin"):
            assert users[name] == before[name], name
        assert links[7]["uf_id"] == self.existing["larry"]
        assert 14 not in links and 17 not in links
        assert str(self.existing["the.boss"]) in outcomes[17]["reason"]


B = TypeVar("B", bound=RealBox)


@contextmanager
def real_box(cls: type[B], site, seed: dict, monkeypatch, tmp_path, settings: dict, **fields) -> Iterator[B]:
    """A `cls` around the real `site`: a CiviCRM emulator seeded with `seed` and connected, and the base
    settings with `settings` over them. The test file connects the CMS (`RealBox.connect`)."""
    api_key, site_key = secrets.token_hex(16), secrets.token_hex(16)
    with ExitStack() as stack:
        civicrm = stack.enter_context(CiviCRMEmulator(api_key=api_key, site_key=site_key))
        civicrm.seed(seed)
        civicrm.start()
        env = local_airflow.connection_env(civicrm.url, api_key, site_key, "", "", "")
        monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", env["AIRFLOW_CONN_CIVICRM_DEFAULT"])
        settings_file = tmp_path / "cmsuser.yaml"
        monkeypatch.setenv("CMSUSER_SETTINGS", str(settings_file))
        box = Sandbox(civicrm, None, settings_file, {"api_key": api_key, "site_key": site_key})
        box.configure(**settings)
        yield cls(box, site, stack, monkeypatch, **fields)
