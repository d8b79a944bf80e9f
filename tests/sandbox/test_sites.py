"""The sandbox starts the CMS emulator the cms_type names, seeds it from the seed's `<cms_type>:` section,
and gives the CMS connection that type; `python -m sandbox` has a subcommand per CMS emulator."""

from __future__ import annotations

import argparse
import json

import pytest
import requests

from sandbox import emulators
from sandbox.__main__ import build_parser
from sandbox.sites import CMS_LOGIN, demo_seed, started_sites
from sandbox.wordpress import WordPressEmulator


def test_the_default_cms_is_wordpress_seeded_from_its_section():
    with started_sites() as sites:
        assert sites.cms_type == "wordpress"
        assert isinstance(sites.cms, WordPressEmulator)
        seeded = {u["username"] for u in demo_seed()["wordpress"]["users"]}
        assert seeded <= {u["username"] for u in sites.cms.users}
        cms = json.loads(sites.connection_env["AIRFLOW_CONN_CMS_DEFAULT"])
        assert (cms["conn_type"], cms["host"], cms["login"]) == ("wordpress", sites.cms.url, CMS_LOGIN)
        me = requests.get(sites.cms.rest_url + "/wp/v2/users/me", timeout=10,
                          auth=(cms["login"], cms["password"]))
        assert me.status_code == 200


def test_the_seed_section_is_the_cms_type(monkeypatch):
    # Any registered cms_type is read from its own section: here WordPress's emulator under another name.
    monkeypatch.setitem(emulators.EMULATORS, "example", "sandbox.wordpress")
    seed = {"civicrm": {}, "wordpress": {"users": [{"username": "not.me", "email": "not.me@example.org"}]},
            "example": {"users": [{"username": "ex.ample", "email": "ex.ample@example.org"}]}}
    with started_sites(seed, cms_type="example") as sites:
        assert sites.cms_type == "example"
        assert [u["username"] for u in sites.cms.users] == ["admin", "ex.ample"]
        assert json.loads(sites.connection_env["AIRFLOW_CONN_CMS_DEFAULT"])["conn_type"] == "example"


def test_an_unknown_cms_type_names_the_emulators_there_are():
    with pytest.raises(ValueError, match="no emulator for cms_type 'nosuchcms'.*wordpress"):
        with started_sites(cms_type="nosuchcms"):
            pass


def test_every_cms_emulator_has_its_subcommand():
    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    for cms_type in emulators.names():
        assert callable(commands.choices[cms_type].get_default("func")), cms_type
    # a server emulator takes its port; Backdrop's is a site folder with a local bee
    assert parser.parse_args(["drupal7", "--port", "0"]).command == "drupal7"
    assert parser.parse_args(["backdrop", "--folder", "/tmp/x"]).command == "backdrop"


def test_the_package_keeps_its_public_names():
    import sandbox.wordpress as wordpress

    for name in ("WordPressEmulator", "Call", "CORE_ROLES", "add_cli", "sanitize_user_strict",
                 "sanitize_text_field", "sanitize_title", "is_email"):
        assert hasattr(wordpress, name), name
    assert wordpress.sanitize_user_strict("Zoë <b>x</b>!") == "Zoe x"
    assert wordpress.is_email("a@b.example") and not wordpress.is_email("a@b")
