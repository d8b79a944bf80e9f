"""The Drupal 8+ JSON:API users contract (shared/contracts/cms-users.md §3), run against the emulator
(sandbox/drupal) and a real Drupal 10.5.5 (sandbox/real_drupal) with the same literal assertions."""

from __future__ import annotations

import pytest
import requests

from sandbox.drupal import testing

drupal_site = testing.drupal_site  # fixtures: the emulator and the session's real Drupal

TIMEOUT = 30
JSONAPI = "application/vnd.api+json"


def post_user(site, attributes: dict, roles: list[str] = (), auth=True, content_type=JSONAPI) -> requests.Response:
    data = {"type": "user--user", "attributes": attributes}
    if roles:
        data["relationships"] = {"roles": {"data": [{"type": "user_role--user_role", "id": r} for r in roles]}}
    return requests.post(site.jsonapi_url + "/user/user", json={"data": data}, timeout=TIMEOUT,
                         auth=site.auth if auth is True else auth, headers={"Content-Type": content_type})


def get(site, route: str, params=None, auth=True) -> requests.Response:
    return requests.get(site.jsonapi_url + route, params=params, timeout=TIMEOUT,
                        auth=site.auth if auth is True else auth)


def role_uuids(site) -> dict[str, str]:
    return {r["attributes"]["drupal_internal__id"]: r["id"] for r in get(site, "/user_role/user_role").json()["data"]}


def users(site, params) -> list[tuple]:
    response = get(site, "/user/user", params)
    assert response.status_code == 200, response.text[:300]
    return [(u["attributes"].get("drupal_internal__uid"), u["attributes"].get("name"), u["attributes"].get("mail"))
            for u in response.json()["data"]]


def errors(response) -> list[tuple]:
    return [(e["status"], e.get("source", {}).get("pointer"), e["detail"]) for e in response.json()["errors"]]


def password_mail(site, body, auth=None) -> requests.Response:
    return requests.post(site.url + "/user/password", params={"_format": "json"}, json=body, auth=auth,
                         timeout=TIMEOUT)


# ----------------------------------------------------------------------------- create


def test_create_answers_201_with_uuid_uid_roles_and_fields(drupal_site):
    member = role_uuids(drupal_site)["member"]
    response = post_user(drupal_site, {"name": "jdoe", "mail": "Jdoe@Example.test", "status": True,
                                       "field_member_number": "M-1"}, [member])
    assert response.status_code == 201, response.text[:500]
    data = response.json()["data"]
    assert response.headers["Location"] == f"{drupal_site.jsonapi_url}/user/user/{data['id']}"
    attributes = data["attributes"]
    assert attributes["drupal_internal__uid"] > 2
    assert (attributes["name"], attributes["mail"], attributes["status"]) == ("jdoe", "Jdoe@Example.test", True)
    assert attributes["field_member_number"] == "M-1"
    assert attributes["preferred_langcode"] == "en"
    assert data["relationships"]["roles"]["data"] == [
        {"type": "user_role--user_role", "id": member, "meta": {"drupal_internal__target_id": "member"}}]
    assert drupal_site.mails() == []  # creating sends no mail


def test_status_defaults_to_blocked(drupal_site):
    response = post_user(drupal_site, {"name": "blocked1", "mail": "blocked1@example.test"})
    assert response.json()["data"]["attributes"]["status"] is False


@pytest.mark.parametrize("name, mail", [("JDOE", "other@example.test"), ("other", "JDOE@example.TEST")])
def test_duplicates_in_any_case_are_422_with_one_pointer_each(drupal_site, name, mail):
    assert post_user(drupal_site, {"name": "jdoe", "mail": "jdoe@example.test", "status": True}).status_code == 201
    response = post_user(drupal_site, {"name": name, "mail": mail, "status": True})
    assert response.status_code == 422
    field = "name" if name == "JDOE" else "mail"
    what = {"name": f"name: The username {name} is already taken.",
            "mail": f"mail: The email address {mail} is already taken."}[field]
    assert errors(response) == [("422", f"/data/attributes/{field}", what)]


def test_both_duplicates_are_reported_name_first(drupal_site):
    post_user(drupal_site, {"name": "jdoe", "mail": "jdoe@example.test", "status": True})
    response = post_user(drupal_site, {"name": "jdoe", "mail": "jdoe@example.test", "status": True})
    assert [pointer for _, pointer, _ in errors(response)] == ["/data/attributes/name", "/data/attributes/mail"]


def test_name_equal_but_for_accents_fails_in_the_database_with_500(drupal_site):
    assert post_user(drupal_site, {"name": "José", "mail": "jose1@example.test", "status": True}).status_code == 201
    for name in ("jose", "JOSE"):
        response = post_user(drupal_site, {"name": name, "mail": f"{name}2@example.test", "status": True})
        assert response.status_code == 500
        assert "Integrity constraint violation" in errors(response)[0][2]
        assert "user__name" in errors(response)[0][2]
    assert users(drupal_site, {"filter[mail]": "jose2@example.test"}) == []


def test_mails_differing_in_non_ascii_case_are_two_accounts(drupal_site):
    assert post_user(drupal_site, {"name": "joe1", "mail": "jöe@example.test", "status": True}).status_code == 201
    assert post_user(drupal_site, {"name": "joe2", "mail": "JÖE@example.test", "status": True}).status_code == 201


@pytest.mark.parametrize("name, detail", [
    ("bad!name", "name: The username contains an illegal character."),
    (" lead", "name: The username cannot begin with a space."),
    ("two  spaces", "name: The username cannot contain multiple spaces in a row."),
    ("a" * 61, f"name: The username {'a' * 61} is too long: it must be 60 characters or less."),
])
def test_invalid_names_are_422_on_the_name_pointer(drupal_site, name, detail):
    response = post_user(drupal_site, {"name": name, "mail": "n@example.test", "status": True})
    assert response.status_code == 422
    assert errors(response) == [("422", "/data/attributes/name", detail)]


def test_allowed_name_characters_are_kept(drupal_site):
    for name in ("Mary Ann.o'k_+x@y-z", "Zoë Øster", "u" * 60):
        response = post_user(drupal_site, {"name": name, "mail": f"{len(name)}@example.test", "status": True})
        assert response.status_code == 201, (name, response.text[:300])
        assert response.json()["data"]["attributes"]["name"] == name


@pytest.mark.parametrize("mail", ["not-an-email", "a..b@example.test", "a@localhost", "e" * 65 + "@example.test",
                                  "e@a." + "d" * 63 + ".test", "e@" + "d" * 64 + ".test"])
def test_invalid_mails_point_at_mail_value(drupal_site, mail):
    response = post_user(drupal_site, {"name": "m1", "mail": mail, "status": True})
    assert response.status_code == 422
    assert errors(response) == [("422", "/data/attributes/mail/value",
                                 "mail.0.value: This value is not a valid email address.")]


def test_mail_of_254_characters_is_the_longest(drupal_site):
    longest = "e" * 64 + "@" + "d" * 63 + "." + "d" * 62 + "." + "d" * 57 + ".test"
    assert len(longest) == 254
    assert post_user(drupal_site, {"name": "long1", "mail": longest, "status": True}).status_code == 201
    response = post_user(drupal_site, {"name": "long2", "mail": "e" + longest, "status": True})
    assert errors(response)[0] == ("422", "/data/attributes/mail/value",
                                   "mail.0.value: Email: the email address can not be longer than 254 characters.")


def test_domain_labels_of_63_first_and_62_after(drupal_site):
    assert post_user(drupal_site, {"name": "d1", "mail": "e@" + "d" * 63 + ".test", "status": True}).status_code == 201
    assert post_user(drupal_site, {"name": "d2", "mail": "e@a." + "d" * 62 + ".test", "status": True}).status_code == 201


def test_plus_and_apostrophe_mails_are_accepted(drupal_site):
    assert post_user(drupal_site, {"name": "ob", "mail": "o'brien+tag@example.test", "status": True}).status_code == 201
    assert users(drupal_site, {"filter[mail]": "O'Brien+tag@example.test"})[0][1] == "ob"


def test_a_language_the_site_lacks_is_422_and_an_enabled_one_is_kept(drupal_site):
    response = post_user(drupal_site, {"name": "l1", "mail": "l1@example.test", "status": True,
                                       "preferred_langcode": "de"})
    assert response.status_code == 422
    assert errors(response)[0] == ("422", "/data/attributes/preferred_langcode/value",
                                   "preferred_langcode.0.value: The value you selected is not a valid choice.")
    ok = post_user(drupal_site, {"name": "l2", "mail": "l2@example.test", "status": True, "preferred_langcode": "fr"})
    assert ok.json()["data"]["attributes"]["preferred_langcode"] == "fr"


def test_unknown_attribute_is_422_without_pointer(drupal_site):
    response = post_user(drupal_site, {"name": "f1", "mail": "f1@example.test", "field_nope": "x"})
    assert response.status_code == 422
    assert errors(response) == [(
        "422", None, "The attribute field_nope does not exist on the user--user resource type.")]


def test_unknown_role_uuid_is_404(drupal_site):
    response = post_user(drupal_site, {"name": "r1", "mail": "r1@example.test"},
                         ["00000000-0000-0000-0000-000000000000"])
    assert response.status_code == 404
    assert "(given as a relationship item) could not be found." in response.json()["errors"][0]["detail"]


def test_empty_name_and_mail_is_refused_and_stores_nothing(drupal_site):
    """pre-flight's probe: it can only be refused."""
    before = users(drupal_site, {})
    response = post_user(drupal_site, {"name": "", "mail": "", "status": True})
    assert response.status_code == 422
    assert errors(response)[0] == ("422", "/data/attributes/name", "name: You must enter a username.")
    assert users(drupal_site, {}) == before


def test_plain_json_content_type_is_415(drupal_site):
    response = post_user(drupal_site, {"name": "c1", "mail": "c1@example.test"}, content_type="application/json")
    assert response.status_code == 415


# ----------------------------------------------------------------------------- look-ups and paging


def test_filters_compare_case_and_accent_insensitively(drupal_site):
    post_user(drupal_site, {"name": "José", "mail": "Jose@Example.test", "status": True})
    assert [u[1] for u in users(drupal_site, {"filter[mail]": "JOSE@example.TEST"})] == ["José"]
    assert [u[1] for u in users(drupal_site, {"filter[name]": "jose"})] == ["José"]
    assert users(drupal_site, {"filter[mail]": "nobody@example.test"}) == []


def test_in_conditions_on_mail_and_uid(drupal_site):
    post_user(drupal_site, {"name": "a1", "mail": "a1@example.test", "status": True})
    found = users(drupal_site, {"filter[v][condition][path]": "mail", "filter[v][condition][operator]": "IN",
                                "filter[v][condition][value][]": ["A1@example.test", "admin@example.test", "x@y.z"]})
    assert sorted(u[1] for u in found) == ["a1", "admin"]
    by_id = users(drupal_site, {"filter[v][condition][path]": "drupal_internal__uid",
                                "filter[v][condition][operator]": "IN", "filter[v][condition][value][]": ["1", "2", "999"]})
    assert [u[0] for u in by_id] == [1, 2]


def test_paging_lists_the_anonymous_user_and_follows_next(drupal_site):
    for i in range(3):
        post_user(drupal_site, {"name": f"p{i}", "mail": f"p{i}@example.test", "status": True})
    first = get(drupal_site, "/user/user", {"page[limit]": 2, "sort": "drupal_internal__uid"}).json()
    assert first["data"][0]["attributes"] == {"display_name": "Anonymous"}
    assert [u["attributes"].get("name") for u in first["data"]] == [None, "admin"]
    assert "meta" not in first or "count" not in first["meta"]
    seen = []
    href = first["links"]["next"]["href"]
    while href:
        page = requests.get(href, auth=drupal_site.auth, timeout=TIMEOUT).json()
        seen += [u["attributes"]["name"] for u in page["data"]]
        href = page["links"].get("next", {}).get("href")
    assert seen[-3:] == ["p0", "p1", "p2"]


def test_page_limit_is_cut_to_50(drupal_site):
    for i in range(50):
        post_user(drupal_site, {"name": f"q{i}", "mail": f"q{i}@example.test", "status": True})
    page = get(drupal_site, "/user/user", {"page[limit]": 200}).json()
    assert len(page["data"]) == 50
    assert "next" in page["links"]


# ----------------------------------------------------------------------------- roles, auth, permissions


def test_roles_show_machine_name_is_admin_and_permissions(drupal_site):
    roles = {r["attributes"]["drupal_internal__id"]: r["attributes"]
             for r in get(drupal_site, "/user_role/user_role").json()["data"]}
    assert {"anonymous", "authenticated", "administrator", "content_editor", "member", "volunteer",
            "site_boss", "cmsuser_api"} <= set(roles)
    assert roles["administrator"]["is_admin"] is True and roles["site_boss"]["is_admin"] is True
    assert not roles["member"]["is_admin"]
    assert sorted(roles["cmsuser_api"]["permissions"]) == ["administer permissions", "administer users"]


def test_index_names_the_caller_only_when_the_credentials_are_right(drupal_site):
    me = requests.get(drupal_site.jsonapi_url, auth=drupal_site.auth, timeout=TIMEOUT).json()["meta"]["links"]["me"]
    assert me["href"].endswith(f"/jsonapi/user/user/{me['meta']['id']}")
    wrong = requests.get(drupal_site.jsonapi_url, auth=(drupal_site.login, "wrong"), timeout=TIMEOUT)
    assert wrong.status_code == 200 and "meta" not in wrong.json()
    assert "user--user" in wrong.json()["links"]


def test_no_credentials_is_401_and_a_wrong_password_403(drupal_site):
    none = post_user(drupal_site, {"name": "x", "mail": "x@example.test"}, auth=None)
    assert none.status_code == 401
    assert none.json()["errors"][0]["detail"] == "No authentication credentials provided."
    wrong = post_user(drupal_site, {"name": "x", "mail": "x@example.test"}, auth=(drupal_site.login, "wrong"))
    assert wrong.status_code == 403
    assert wrong.json()["errors"][0]["detail"] == "The 'administer users' permission is required."
    assert get(drupal_site, "/user/user", {"filter[mail]": "x@example.test"}, auth=(drupal_site.login, "bad")
               ).status_code == 403


def test_without_administer_permissions_roles_are_omitted_naming_it(drupal_site):
    drupal_site.set_permissions(["administer users"])
    document = get(drupal_site, "/user_role/user_role").json()
    assert document["data"] == []
    details = {link.get("meta", {}).get("detail") for link in document["meta"]["omitted"]["links"].values()}
    assert ("The current user is not allowed to GET the selected resource. The 'administer permissions' "
            "permission is required.") in details
    assert post_user(drupal_site, {"name": "", "mail": "", "status": True}).status_code == 422


def test_without_administer_users_create_and_mail_filter_are_403(drupal_site):
    drupal_site.set_permissions(["administer permissions"])
    response = post_user(drupal_site, {"name": "", "mail": "", "status": True})
    assert response.status_code == 403
    assert response.json()["errors"][0]["detail"] == "The 'administer users' permission is required."
    assert get(drupal_site, "/user/user", {"filter[mail]": "a@b.test"}).status_code == 403


def test_languages_need_administer_languages(drupal_site):
    hidden = get(drupal_site, "/configurable_language/configurable_language").json()
    assert hidden["data"] == [] and "omitted" in hidden["meta"]
    drupal_site.set_permissions(["administer users", "administer permissions", "administer languages"])
    found = get(drupal_site, "/configurable_language/configurable_language").json()["data"]
    assert sorted((x["attributes"]["drupal_internal__id"], x["attributes"]["locked"]) for x in found) == [
        ("en", False), ("fr", False), ("und", True), ("zxx", True)]


def test_read_only_json_api_answers_405(drupal_site):
    drupal_site.set_read_only(True)
    try:
        response = post_user(drupal_site, {"name": "", "mail": ""})
        assert response.status_code == 405
        assert get(drupal_site, "/user/user", {"filter[name]": "admin"}).status_code == 200
    finally:
        drupal_site.set_read_only(False)


# ----------------------------------------------------------------------------- the password mail


def test_password_mail_sends_exactly_one_mail_per_request(drupal_site):
    post_user(drupal_site, {"name": "mailme", "mail": "MailMe@example.test", "status": True})
    response = password_mail(drupal_site, {"mail": "mailme@example.test"})
    assert (response.status_code, response.text) == (200, "")
    mails = drupal_site.mails()
    assert [(m["to"], m["subject"]) for m in mails] == [
        ("MailMe@example.test", "Replacement login information for mailme at cmsuser real Drupal")]
    password_mail(drupal_site, {"name": "MAILME"})
    assert len(drupal_site.mails()) == 2


def test_password_mail_for_unknown_or_blocked_accounts_is_200_without_mail(drupal_site):
    post_user(drupal_site, {"name": "blocked", "mail": "blocked@example.test"})
    assert password_mail(drupal_site, {"mail": "nobody@example.test"}).status_code == 200
    assert password_mail(drupal_site, {"mail": "blocked@example.test"}).status_code == 200
    assert drupal_site.mails() == []


def test_password_mail_refuses_credentials_and_reports_a_broken_mail_system(drupal_site):
    post_user(drupal_site, {"name": "m2", "mail": "m2@example.test", "status": True})
    with_auth = password_mail(drupal_site, {"mail": "m2@example.test"}, auth=drupal_site.auth)
    assert with_auth.status_code == 403
    assert with_auth.json() == {"message": "The used authentication method is not allowed on this route."}
    assert password_mail(drupal_site, {}).json() == {"message": "Missing credentials.name or credentials.mail"}
    drupal_site.set_mail_works(False)
    failed = password_mail(drupal_site, {"mail": "m2@example.test"})
    assert failed.status_code == 400
    assert failed.json() == {"message": "Unable to send email. Contact the site administrator if the problem persists."}
    assert drupal_site.mails() == []

