"""The bare create loop every benchmark compares with: exactly a create (and a mail with notify) per account."""

from __future__ import annotations

import threading

import pytest

from bench.bare import bare_loop, bare_people
from cms_operators.backend import CmsRejected, CmsUser


class Site:
    def __init__(self, fail_on: str | None = None):
        self.fail_on = fail_on
        self.lock = threading.Lock()
        self.created: list[str] = []
        self.mailed: list[int] = []
        self.opened = self.closed = 0

    def open(self):
        with self.lock:
            self.opened += 1
        return Session(self)


class Session:
    def __init__(self, site: Site):
        self.site = site

    def create_user(self, *, username, email, first_name, last_name, display_name, roles):
        if email == self.site.fail_on:
            raise CmsRejected(400, "rest_invalid_param", "refused")
        with self.site.lock:
            self.site.created.append(email)
            return CmsUser(uf_id=len(self.site.created), username=username, email=email)

    def send_password_mail(self, user):
        with self.site.lock:
            self.site.mailed.append(user.uf_id)

    def close(self):
        with self.site.lock:
            self.site.closed += 1


@pytest.mark.parametrize("notify", [True, False])
def test_every_account_is_created_once_and_mailed_only_with_notify(notify):
    site, people = Site(), bare_people(50)
    result = bare_loop(site.open, people, roles=["subscriber"], notify=notify, concurrency=4)
    assert sorted(site.created) == sorted(p["email"] for p in people)
    assert len(site.mailed) == (50 if notify else 0)
    assert (result["created"], result["mails"]) == (50, 50 if notify else 0)
    assert site.opened == site.closed == 5  # one session per thread, and one opened off the clock first


def test_an_error_from_the_cms_stops_every_thread_and_is_raised():
    people = bare_people(200)
    site = Site(fail_on=people[3]["email"])
    with pytest.raises(CmsRejected):
        bare_loop(site.open, people, roles=[], notify=False, concurrency=3)
    assert len(site.created) < len(people) - 1
    assert site.closed == site.opened
