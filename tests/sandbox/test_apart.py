"""An emulator in a process of its own: built, seeded and served there; its methods and attributes reached here."""

from __future__ import annotations

import os

import pytest
import requests

from sandbox.apart import Apart, ApartError
from sandbox.sites import demo_seed, started_sites


class Probe:
    def __init__(self):
        self.pid = os.getpid()
        self.seen: list[int] = []
        self.stopped = False

    def get_pid(self) -> int:
        return self.pid

    def add(self, value: int) -> int:
        self.seen.append(value)
        return sum(self.seen)

    def fail(self):
        raise ValueError("no such contact")

    def stop(self):
        self.stopped = True


def test_the_emulator_lives_in_a_child_process_and_answers_from_there():
    apart = Apart(lambda: (Probe(), {"url": "http://127.0.0.1:1"}), "probe")
    try:
        assert apart.url == "http://127.0.0.1:1"
        assert apart.get_pid() != os.getpid() and apart.get_pid() == apart.pid  # built in the child, served there
        assert apart.add(2) == 2 and apart.add(3) == 5  # its state stays there, between calls
        assert apart.seen == [2, 3]  # attributes come back as copies
        with pytest.raises(ApartError, match="no such contact"):
            apart.fail()
        assert apart.add(1) == 6  # an error does not end it
    finally:
        apart.stop()
    apart.stop()  # twice is harmless


def test_a_build_that_fails_is_raised_here():
    def build():
        raise RuntimeError("seed refused")

    with pytest.raises(ApartError, match="seed refused"):
        Apart(build, "broken")


def test_sites_apart_serve_the_seed_and_count_the_calls():
    with started_sites(apart=True) as sites:
        sites.cms.reset_calls()
        answer = requests.get(f"{sites.cms.url}/wp-json/", timeout=5)
        assert answer.status_code == 200
        assert len(sites.cms.calls) == 1
        seeded = {contact["id"] for contact in demo_seed()["civicrm"]["contacts"]}
        assert {row["id"] for row in sites.civicrm.table("Contact")} >= seeded  # seeded in its process
        assert sites.civicrm.url.startswith("http://127.0.0.1:")
