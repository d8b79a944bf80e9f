"""The WordPress users contract (shared/contracts/cms-users.md §2), run against the emulator and a
real WordPress 6.1 with the same assertions, so the emulator cannot drift from the real thing."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
import requests

from tests import real_wordpress as wp_fixtures

# The fixtures live in tests/real_wordpress.py so the end-to-end tests can share them.
real_wordpress = wp_fixtures.real_wordpress
wordpress_site = wp_fixtures.wordpress_site

TIMEOUT = 20


def create(site, auth=True, **fields) -> requests.Response:
    body = {"password": "S3cret-pass", **fields}
    return requests.post(site.rest_url + "/wp/v2/users", json=body, timeout=TIMEOUT,
                         auth=site.auth if auth is True else auth)


def get(site, route: str, params: dict | None = None, auth=True) -> requests.Response:
    return requests.get(site.rest_url + route, params=params, timeout=TIMEOUT,
                        auth=site.auth if auth is True else auth)


def list_users(site, query: str, auth=True) -> requests.Response:
    """GET /wp/v2/users with a hand-written query string (to control the encoding exactly)."""
    return requests.get(f"{site.rest_url}/wp/v2/users?{query}", timeout=TIMEOUT,
                        auth=site.auth if auth is True else auth)


def user_count(site) -> int:
    return int(get(site, "/wp/v2/users", {"context": "edit", "per_page": 1}).headers["X-WP-Total"])


def lost_password(site, user_login: str) -> requests.Response:
    return requests.post(f"{site.url}/wp-login.php?action=lostpassword", data={"user_login": user_login},
                         allow_redirects=False, timeout=TIMEOUT)


# ----------------------------------------------------------------------------- create


def test_create_answers_201_with_the_new_user(wordpress_site):
    response = create(wordpress_site, username="jdoe", email="jdoe@example.test", first_name="Jane",
                      last_name="Doe", roles=["subscriber", "member"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert isinstance(body["id"], int) and body["id"] > 1
    assert (body["username"], body["email"], body["roles"]) == ("jdoe", "jdoe@example.test", ["subscriber", "member"])
    assert body["name"] == "Jane Doe"  # display name from first + last when `name` is absent
    assert response.headers["Location"].endswith(f"/wp-json/wp/v2/users/{body['id']}")
    again = get(wordpress_site, f"/wp/v2/users/{body['id']}", {"context": "edit"}).json()
    assert (again["username"], again["email"], again["roles"]) == ("jdoe", "jdoe@example.test", ["subscriber", "member"])


def test_roles_default_to_subscriber_and_an_empty_list_means_no_role(wordpress_site):
    default = create(wordpress_site, username="plain", email="plain@example.test")
    none = create(wordpress_site, username="norole", email="norole@example.test", roles=[])
    assert default.json()["roles"] == ["subscriber"]
    assert none.status_code == 201 and none.json()["roles"] == []


def test_form_encoded_body_is_accepted(wordpress_site):
    response = requests.post(wordpress_site.rest_url + "/wp/v2/users", auth=wordpress_site.auth, timeout=TIMEOUT,
                             data={"username": "form1", "email": "form1@example.test", "password": "x",
                                   "roles": "subscriber,member"})
    assert response.status_code == 201, response.text
    assert response.json()["roles"] == ["subscriber", "member"]


def test_names_are_sanitised_and_escaped(wordpress_site):
    body = create(wordpress_site, username="tom", email="tom@example.test", name="  Tom <b>&</b>   Co ").json()
    assert body["name"] == "Tom &amp; Co"


@pytest.mark.parametrize("login_case, email_case", [("JDOE", "other@example.test"), ("jdoe", "other@example.test")])
def test_duplicate_login_in_any_case_is_500_existing_user_login(wordpress_site, login_case, email_case):
    assert create(wordpress_site, username="jdoe", email="jdoe@example.test").status_code == 201
    response = create(wordpress_site, username=login_case, email=email_case)
    assert response.status_code == 500
    assert response.json() == {"code": "existing_user_login", "message": "Sorry, that username already exists!",
                               "data": None}


def test_duplicate_email_in_any_case_is_500_existing_user_email(wordpress_site):
    assert create(wordpress_site, username="jdoe", email="jdoe@example.test").status_code == 201
    response = create(wordpress_site, username="someone", email="JDOE@Example.TEST")
    assert response.status_code == 500
    assert response.json()["code"] == "existing_user_email"
    assert response.json()["data"] is None


def test_login_is_checked_before_email(wordpress_site):
    create(wordpress_site, username="jdoe", email="jdoe@example.test")
    assert create(wordpress_site, username="jdoe", email="jdoe@example.test").json()["code"] == "existing_user_login"


@pytest.mark.parametrize("username", ["jöhn", "bad!", "a<b>c", " lead", "trail ", "two  spaces", "pct%41x",
                                      "ent&amp;x", "plus+sign"])
def test_username_with_illegal_characters_is_400(wordpress_site, username):
    response = create(wordpress_site, username=username, email="u@example.test")
    assert response.status_code == 400
    data = response.json()["data"]
    assert data["details"]["username"]["code"] == "rest_user_invalid_username"
    assert user_count(wordpress_site) == 1


def test_allowed_username_characters_are_kept_as_sent(wordpress_site):
    response = create(wordpress_site, username="Mary Ann.o-k_@x", email="mary@example.test")
    assert response.status_code == 201
    assert response.json()["username"] == "Mary Ann.o-k_@x"
    assert response.json()["slug"] == "mary-ann-o-k_x"


def test_username_over_60_characters_is_500_user_login_too_long(wordpress_site):
    assert create(wordpress_site, username="u" * 60, email="u60@example.test").status_code == 201
    response = create(wordpress_site, username="v" * 61, email="v61@example.test")
    assert response.status_code == 500
    assert response.json()["code"] == "user_login_too_long"
    assert user_count(wordpress_site) == 2


def test_email_over_100_characters_is_500_and_stores_nothing(wordpress_site):
    ok = "e" * 93 + "@e.test"  # exactly 100
    assert create(wordpress_site, username="e100", email=ok).status_code == 201
    response = create(wordpress_site, username="e101", email="e" * 94 + "@e.test")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_server_error"
    assert user_count(wordpress_site) == 2
    assert get(wordpress_site, "/wp/v2/users", {"context": "edit", "search": "e101"}).json() == []


def test_display_name_over_250_characters_is_500_and_stores_nothing(wordpress_site):
    assert create(wordpress_site, username="n250", email="n250@example.test", name="n" * 250).status_code == 201
    response = create(wordpress_site, username="n251", email="n251@example.test", name="n" * 251)
    assert response.status_code == 500 and response.json()["code"] == "internal_server_error"
    assert user_count(wordpress_site) == 2


@pytest.mark.parametrize("fields, error", [
    ({"email": "r3@example.test", "password": None}, "rest_missing_callback_param"),
    ({"username": "bad", "email": "not-an-email"}, "rest_invalid_email"),
    ({"username": "bad", "email": "a..b@example.test"}, None),
    ({"username": "pw", "email": "pw@example.test", "password": "a\\b"}, "rest_user_invalid_password"),
    ({"username": "loc", "email": "loc@example.test", "locale": "xx_XX"}, "rest_not_in_enum"),
])
def test_validation_errors_are_400(wordpress_site, fields, error):
    body = {k: v for k, v in fields.items() if v is not None}
    if fields.get("password", "") is None:
        response = requests.post(wordpress_site.rest_url + "/wp/v2/users", json=body, auth=wordpress_site.auth,
                                 timeout=TIMEOUT)
    else:
        response = create(wordpress_site, **body)
    if error is None:  # 'a..b@' is a valid local part for WordPress's is_email()
        assert response.status_code == 201
        return
    assert response.status_code == 400
    payload = response.json()
    if error == "rest_missing_callback_param":
        assert payload["code"] == error and payload["data"]["params"] == ["username", "password"]
    else:
        assert payload["code"] == "rest_invalid_param"
        assert [d["code"] for d in payload["data"]["details"].values()] == [error]


@pytest.mark.parametrize("body, named", [
    ({"username": "jöhn!", "email": "j1@example.test", "password": "a\\b"}, "username, password"),
    ({"password": "a\\b", "username": "jöhn!", "email": "j1@example.test"}, "password, username"),
])
def test_one_stage_names_every_bad_field_in_body_order(wordpress_site, body, named):
    response = requests.post(wordpress_site.rest_url + "/wp/v2/users", json=body, auth=wordpress_site.auth,
                             timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["message"] == f"Invalid parameter(s): {named}"


def test_argument_checks_come_before_the_permission_check(wordpress_site):
    anonymous_bad = create(wordpress_site, auth=None, username="z", email="bad")
    anonymous_good = create(wordpress_site, auth=None, username="z", email="z@example.test")
    assert anonymous_bad.status_code == 400
    assert anonymous_good.status_code == 401
    assert anonymous_good.json()["code"] == "rest_cannot_create_user"


def test_roles_are_checked_before_the_login(wordpress_site):
    """What the backend's preflight relies on to prove roles exist without creating anything."""
    ok = create(wordpress_site, username=wordpress_site.login, email=wordpress_site.admin_email, roles=["member"])
    bad = create(wordpress_site, username=wordpress_site.login, email=wordpress_site.admin_email, roles=["nope"])
    assert (ok.status_code, ok.json()["code"]) == (500, "existing_user_login")
    assert bad.status_code == 400
    assert bad.json() == {"code": "rest_user_invalid_role", "message": "The role nope does not exist.",
                          "data": {"status": 400}}
    assert user_count(wordpress_site) == 1


def test_nicename_length_is_checked_before_the_email_and_url_length_after(wordpress_site):
    create(wordpress_site, username="taken", email="taken@example.test")
    slug = create(wordpress_site, username="new1", email="TAKEN@example.test", slug="s" * 51)
    url = create(wordpress_site, username="new2", email="TAKEN@example.test", url="http://" + "u" * 100 + ".test")
    assert slug.json()["code"] == "user_nicename_too_long"
    assert url.json()["code"] == "existing_user_email"


def test_body_with_id_is_rejected(wordpress_site):
    response = create(wordpress_site, username="r2", email="r2@example.test", id=5)
    assert (response.status_code, response.json()["code"]) == (400, "rest_user_exists")


def test_slugs_are_made_unique(wordpress_site):
    slugs = [create(wordpress_site, username=name, email=f"{n}@example.test").json()["slug"]
             for n, name in enumerate(["Jane Doe", "jane-doe", "jane.doe"])]
    assert slugs == ["jane-doe", "jane-doe-2", "jane-doe-3"]


# ----------------------------------------------------------------------------- lookup


def test_lookup_by_email_needs_plus_encoded(wordpress_site):
    create(wordpress_site, username="mary", email="mary+tag@example.test")
    encoded = list_users(wordpress_site, "context=edit&search=" + quote("mary+tag@example.test", safe="@"))
    raw = list_users(wordpress_site, "context=edit&search=mary+tag@example.test")
    assert [u["email"] for u in encoded.json()] == ["mary+tag@example.test"]
    assert raw.json() == []  # the '+' arrives as a space
    assert (raw.headers["X-WP-Total"], raw.headers["X-WP-TotalPages"]) == ("0", "0")


def test_search_is_a_substring_match_the_client_must_filter(wordpress_site):
    for name in ("ann", "anna", "joann"):
        create(wordpress_site, username=name, email=f"{name}@example.test")
    by_email = get(wordpress_site, "/wp/v2/users", {"context": "edit", "search": "ann@example.test"}).json()
    by_login = get(wordpress_site, "/wp/v2/users", {"context": "edit", "search": "ANN", "orderby": "id"}).json()
    assert [u["email"] for u in by_email] == ["ann@example.test", "joann@example.test"]
    assert [u["username"] for u in by_login] == ["ann", "anna", "joann"]


def test_search_with_at_sign_looks_at_emails_only(wordpress_site):
    create(wordpress_site, username="who@where", email="someone@example.test")
    assert get(wordpress_site, "/wp/v2/users", {"context": "edit", "search": "who@where"}).json() == []
    found = get(wordpress_site, "/wp/v2/users", {"context": "edit", "search": "who"}).json()
    assert [u["username"] for u in found] == ["who@where"]


def test_numeric_search_matches_logins_and_the_id(wordpress_site):
    ids = [create(wordpress_site, username=f"user{n}", email=f"u{n}@example.test").json()["id"] for n in range(3)]
    ids.append(create(wordpress_site, username="12345", email="n@example.test").json()["id"])
    found = get(wordpress_site, "/wp/v2/users", {"context": "edit", "search": "2", "orderby": "id"}).json()
    assert ids[0] == 2  # a clean site hands out ids from 2
    assert [u["id"] for u in found] == [ids[0], ids[2], ids[3]]  # id 2, 'user2', '12345'


def test_paging_headers_and_links(wordpress_site):
    for n in range(5):
        create(wordpress_site, username=f"page{n}", email=f"page{n}@example.test")
    response = list_users(wordpress_site, "context=edit&per_page=2&page=2&orderby=id&order=asc")
    base = f"{wordpress_site.rest_url}/wp/v2/users?context=edit&per_page=2"
    assert response.headers["X-WP-Total"] == "6" and response.headers["X-WP-TotalPages"] == "3"
    assert response.headers["Link"] == (f'<{base}&page=1&orderby=id&order=asc>; rel="prev", '
                                        f'<{base}&page=3&orderby=id&order=asc>; rel="next"')
    assert [u["username"] for u in response.json()] == ["page1", "page2"]
    beyond = list_users(wordpress_site, "context=edit&per_page=2&page=5&orderby=id")
    assert beyond.json() == []
    assert beyond.headers["Link"] == f'<{base}&page=3&orderby=id>; rel="prev"'


def test_single_page_keeps_the_api_discovery_link(wordpress_site):
    response = list_users(wordpress_site, "context=edit&per_page=10")
    assert response.headers["Link"] == f'<{wordpress_site.rest_url}/>; rel="https://api.w.org/"'


@pytest.mark.parametrize("per_page", ["101", "0"])
def test_per_page_outside_1_to_100_is_400(wordpress_site, per_page):
    response = list_users(wordpress_site, f"per_page={per_page}")
    assert response.status_code == 400
    assert response.json()["data"]["params"] == {
        "per_page": "per_page must be between 1 (inclusive) and 100 (inclusive)"}


def test_view_context_hides_username_email_and_roles(wordpress_site):
    create(wordpress_site, username="tom", email="tom@example.test")
    (view,) = get(wordpress_site, "/wp/v2/users", {"search": "tom"}).json()
    (edit,) = get(wordpress_site, "/wp/v2/users", {"search": "tom", "context": "edit"}).json()
    assert not {"username", "email", "roles"} & set(view)
    assert (edit["username"], edit["email"], edit["roles"]) == ("tom", "tom@example.test", ["subscriber"])


def test_anonymous_callers_see_only_authors_and_no_edit_context(wordpress_site):
    create(wordpress_site, username="tom", email="tom@example.test")
    anonymous = get(wordpress_site, "/wp/v2/users", auth=None)
    forbidden = get(wordpress_site, "/wp/v2/users", {"context": "edit"}, auth=None)
    assert [u["id"] for u in anonymous.json()] == [1]  # only the admin has published posts
    assert (forbidden.status_code, forbidden.json()["code"]) == (401, "rest_forbidden_context")


def test_include_and_roles_filters(wordpress_site):
    a = create(wordpress_site, username="a1", email="a1@example.test", roles=["member"]).json()["id"]
    b = create(wordpress_site, username="b1", email="b1@example.test").json()["id"]
    members = get(wordpress_site, "/wp/v2/users", {"context": "edit", "roles": "member"}).json()
    included = get(wordpress_site, "/wp/v2/users", {"context": "edit", "include": f"{a},{b}", "orderby": "id"}).json()
    assert [u["id"] for u in members] == [a]
    assert [u["id"] for u in included] == [a, b]


def test_unknown_user_id_is_404(wordpress_site):
    response = get(wordpress_site, "/wp/v2/users/99999", {"context": "edit"})
    assert (response.status_code, response.json()["code"]) == (404, "rest_user_invalid_id")


def test_rest_route_query_form_works(wordpress_site):
    response = requests.get(f"{wordpress_site.url}/?rest_route=/wp/v2/users/me&context=edit",
                            auth=wordpress_site.auth, timeout=TIMEOUT)
    assert response.status_code == 200 and response.json()["username"] == wordpress_site.login


def test_index_announces_application_passwords_and_locales(wordpress_site):
    index = requests.get(wordpress_site.rest_url + "/", timeout=TIMEOUT).json()
    assert "wp/v2" in index["namespaces"]
    assert index["authentication"]["application-passwords"]["endpoints"]["authorization"].endswith(
        "/wp-admin/authorize-application.php")
    (post,) = [e for e in index["routes"]["/wp/v2/users"]["endpoints"] if "POST" in e["methods"]]
    assert post["args"]["locale"]["enum"] == ["", "en_US"]


def test_delete_needs_reassign_and_force(wordpress_site):
    user_id = create(wordpress_site, username="gone", email="gone@example.test").json()["id"]
    route = f"/wp/v2/users/{user_id}"
    no_reassign = requests.delete(wordpress_site.rest_url + route, params={"force": "true"},
                                  auth=wordpress_site.auth, timeout=TIMEOUT)
    no_force = requests.delete(wordpress_site.rest_url + route, params={"reassign": 1},
                               auth=wordpress_site.auth, timeout=TIMEOUT)
    deleted = requests.delete(wordpress_site.rest_url + route, params={"force": "true", "reassign": 1},
                              auth=wordpress_site.auth, timeout=TIMEOUT)
    assert (no_reassign.status_code, no_reassign.json()["code"]) == (400, "rest_missing_callback_param")
    assert (no_force.status_code, no_force.json()["code"]) == (501, "rest_trash_not_supported")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert deleted.json()["previous"]["username"] == "gone"
    assert user_count(wordpress_site) == 1


# ----------------------------------------------------------------------------- auth


def test_wrong_application_password_is_401(wordpress_site):
    me = get(wordpress_site, "/wp/v2/users/me", auth=(wordpress_site.login, "wrong pass word"))
    create_anyway = create(wordpress_site, auth=(wordpress_site.login, "wrong"), username="z", email="z@example.test")
    assert (me.status_code, me.json()["code"]) == (401, "rest_not_logged_in")
    assert (create_anyway.status_code, create_anyway.json()["code"]) == (401, "rest_cannot_create_user")


def test_account_password_is_refused(wordpress_site):
    password = wordpress_site.account_password or "the-account-password"
    response = get(wordpress_site, "/wp/v2/users/me", auth=(wordpress_site.login, password))
    assert response.status_code == 401


def test_application_password_spaces_are_optional_and_email_works_as_login(wordpress_site):
    squeezed = wordpress_site.app_password.replace(" ", "")
    by_login = get(wordpress_site, "/wp/v2/users/me", {"context": "edit"}, auth=(wordpress_site.login, squeezed))
    by_email = get(wordpress_site, "/wp/v2/users/me", {"context": "edit"},
                   auth=(wordpress_site.admin_email, wordpress_site.app_password))
    assert by_login.status_code == 200 and by_email.status_code == 200
    caps = by_login.json()["capabilities"]
    assert caps["create_users"] and caps["list_users"] and caps["edit_users"]


def test_application_password_is_case_sensitive(wordpress_site):
    swapped = wordpress_site.app_password.swapcase()
    assert swapped != wordpress_site.app_password
    assert get(wordpress_site, "/wp/v2/users/me", auth=(wordpress_site.login, swapped)).status_code == 401


def test_malformed_basic_header_is_anonymous(wordpress_site):
    response = requests.get(wordpress_site.rest_url + "/wp/v2/users/me", timeout=TIMEOUT,
                            headers={"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()})
    assert response.status_code == 401


# ----------------------------------------------------------------------------- lostpassword mail


def test_lostpassword_redirects_and_sends_one_mail(wordpress_site):
    user = create(wordpress_site, username="mailme", email="MailMe@example.test").json()
    response = lost_password(wordpress_site, "mailme@example.test")
    assert response.status_code == 302
    assert response.headers["Location"] == "/wp-login.php?checkemail=confirm"
    mails = wordpress_site.mails()
    assert len(mails) == 1
    assert (mails[0]["user_login"], mails[0]["to"], mails[0]["user_id"]) == ("mailme", "MailMe@example.test",
                                                                          user["id"])


def test_lostpassword_by_login_works_too(wordpress_site):
    create(wordpress_site, username="bylogin", email="bylogin@example.test")
    assert lost_password(wordpress_site, "BYLOGIN").status_code == 302
    assert [m["user_login"] for m in wordpress_site.mails()] == ["bylogin"]


@pytest.mark.parametrize("who", ["nobody@example.test", "nobody"])
def test_lostpassword_for_an_unknown_user_is_200_with_an_error(wordpress_site, who):
    response = lost_password(wordpress_site, who)
    assert response.status_code == 200
    assert 'id="login_error"' in response.text
    assert "There is no account with that username or email address." in response.text
    assert wordpress_site.mails() == []


def test_lostpassword_when_mail_fails_is_200_with_an_error(wordpress_site):
    create(wordpress_site, username="nomail", email="nomail@example.test")
    wordpress_site.set_mail_works(False)
    response = lost_password(wordpress_site, "nomail@example.test")
    assert response.status_code == 200
    assert "The email could not be sent." in response.text
    assert wordpress_site.mails() == []
