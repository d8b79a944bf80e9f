"""The Joomla emulator's data and rules: users, groups, tokens, and the checks a create goes through.

The order and wording of the checks are Joomla 5.3's (as the real site answered in
tests/contract/test_joomla_contract.py): authentication, Create permission, the user form
(required fields, email format, password policy; the username filter strips HTML tags), the
group check, `Table\\User::check()` (name, username format and length, email format and length,
username taken under utf8mb4_unicode_ci, email taken under LOWER()), the Super User check, then
the insert (unknown group ids dropped silently) and, with mail_to_user on, the "New User Details"
mail with the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import string
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime

# The core groups as this (French-built) Joomla titles them, plus the API group start.sh makes.
CORE_GROUPS = (
    {"id": 1, "parent_id": 0, "title": "Public"},
    {"id": 9, "parent_id": 1, "title": "Invité"},
    {"id": 6, "parent_id": 1, "title": "Gestionnaire"},
    {"id": 7, "parent_id": 6, "title": "Administrateur"},
    {"id": 2, "parent_id": 1, "title": "Enregistré"},
    {"id": 3, "parent_id": 2, "title": "Auteur"},
    {"id": 4, "parent_id": 3, "title": "Rédacteur"},
    {"id": 5, "parent_id": 4, "title": "Éditeur"},
    {"id": 8, "parent_id": 1, "title": "Super utilisateur"},
    {"id": 10, "parent_id": 1, "title": "API clients"},
)
SUPER_USERS = 8
API_GROUP = 10

MESSAGES = {
    "en-GB": {
        "required": "Field required: %s", "invalid": "Invalid field: %s",
        "labels": {"name": "Name", "username": "Login Name (Username)", "password": "Password",
                   "password2": "Confirm Password", "email": "Email"},
        "save_failed": "Save failed with the following error: %s",
        "no_groups": "You can't save a user account without selecting at least one user group.",
        "enter_name": "Please enter your name.", "enter_username": "Please enter a username.",
        "valid_username": "Please enter a valid username. No space at beginning or end, at least 2 characters, must "
                          "<strong>not</strong> have the following characters: < > \\ &quot; ' &#37; ; ( ) & and be "
                          "less than 150 characters long.",
        "valid_mail": "The email address you entered is invalid. Please enter another email address.",
        "username_in_use": "Username in use.",
        "email_in_use": "The email address you entered is already in use. Please enter another email address.",
        "not_super": "User not Super Administrator",
        "new_user_subject": "New User Details",
        "reset_subject": "Your %s password reset request",
    },
    "fr-FR": {
        "required": "Champ requis: %s", "invalid": "Champ invalide: %s",
        "labels": {"name": "Nom", "username": "Identifiant", "password": "Mot de passe",
                   "password2": "Confirmation", "email": "E-mail"},
        "save_failed": "L'enregistrement a échoué avec l'erreur suivante&#160;: %s",
        "no_groups": "Vous ne pouvez pas enregistrer un compte d'utilisateur sans sélectionner au moins un groupe "
                     "d'utilisateurs.",
        "enter_name": "Veuillez saisir votre nom.", "enter_username": "Veuillez saisir un nom d'utilisateur.",
        "valid_username": "Veuillez saisir un nom d'utilisateur valide, sans espaces au début ou à la fin, d'au moins "
                          "2 caractères, <strong>sans les caractères suivants</strong> : < > \\ &quot; ' &#37; ; ( ) "
                          "& et de maximum 150 caractères.",
        "valid_mail": "L'adresse e-mail saisie n'est pas valide. Veuillez saisir une autre adresse e-mail.",
        "username_in_use": "Nom d'utilisateur utilisé",
        "email_in_use": "Cette adresse e-mail est déjà utilisée. Merci d'utiliser une autre adresse e-mail.",
        "not_super": "User not Super Administrator",
        "new_user_subject": "Détails du nouvel utilisateur",
        "reset_subject": "Demande de réinitialisation du mot de passe de %s",
    },
}

_EMAIL_RE = re.compile(r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                       r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
_BAD_USERNAME_RE = re.compile(r"""[<>"'%;()&\\]|\.\./""")
_TAG_RE = re.compile(r"<[^>]*>?")


def collation_key(text: str) -> str:
    """utf8mb4_unicode_ci, near enough: case and accents ignored."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def like(pattern: str, value: str) -> bool:
    """SQL LIKE under utf8mb4_unicode_ci: % any run, _ one character, case and accents ignored."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in collation_key(pattern))
    return re.fullmatch(regex, collation_key(value), re.S) is not None


def is_email_address(email: str) -> bool:
    """MailHelper::isEmailAddress(): local part of 1-64 allowed characters without a leading,
    trailing or doubled dot; domain of 1-255 characters in labels of letters, digits and inner
    hyphens (or an IP-ish run of digits and dots)."""
    local, _, domain = email.rpartition("@")
    if not 1 <= len(domain) <= 255:
        return False
    if (not re.fullmatch(r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}", local) or local.startswith(".")
            or local.endswith(".") or ".." in local):
        return False
    if re.fullmatch(r"[0-9.]+", domain):
        return True
    return all(re.fullmatch(r"[a-zA-Z0-9-]+", label) and not label.startswith("-") and not label.endswith("-")
               for label in domain.split("."))


def now_sql() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


class SaveRefused(Exception):
    """A refused create: HTTP status, the error title, and whether it carries `code` (a failed save)."""

    def __init__(self, status: int, title: str, *, with_code: bool):
        super().__init__(title)
        self.status, self.title, self.with_code = status, title, with_code


@dataclass
class Store:
    """Users and groups of one emulated site; not thread-safe on its own (the server holds a lock)."""

    secret: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    language: str = "en-GB"
    mail_to_user: bool = False
    minimum_password_length: int = 12
    reset_count: int = 10
    reset_hours: int = 1
    site_name: str = "Joomla emulator"
    users: dict[int, dict] = field(default_factory=dict)
    groups: dict[int, dict] = field(default_factory=dict)
    login_api_groups: set[int] = field(default_factory=lambda: {SUPER_USERS, API_GROUP})
    create_groups: set[int] = field(default_factory=lambda: {SUPER_USERS, API_GROUP})
    token_groups: set[int] = field(default_factory=lambda: {SUPER_USERS, API_GROUP})
    mails: list[dict] = field(default_factory=list)
    next_id: int = 100

    def __post_init__(self):
        if not self.groups:
            for group in CORE_GROUPS:
                self.groups[group["id"]] = dict(group)

    # --- messages ----------------------------------------------------------------------------

    def text(self, key: str) -> str:
        return MESSAGES.get(self.language, MESSAGES["en-GB"])[key]

    # --- groups ----------------------------------------------------------------------------------

    def add_group(self, title: str, parent_id: int = 1, group_id: int | None = None) -> dict:
        if parent_id not in self.groups:
            raise ValueError(f"no parent group {parent_id}")
        group_id = group_id or max(self.groups) + 1
        if group_id in self.groups:
            raise ValueError(f"group {group_id} exists")
        if any(g["parent_id"] == parent_id and g["title"] == title for g in self.groups.values()):
            raise ValueError(f"group title {title!r} exists under {parent_id}")  # Joomla's unique (parent, title)
        self.groups[group_id] = {"id": group_id, "parent_id": parent_id, "title": title}
        return self.groups[group_id]

    def ancestors(self, group_id: int) -> list[int]:
        """The group and every group above it (what a member of it inherits from)."""
        chain, current = [], group_id
        while current in self.groups and current not in chain:
            chain.append(current)
            current = self.groups[current]["parent_id"]
        return chain

    def inherits(self, group_ids, allowed: set[int]) -> bool:
        return any(a in allowed for g in group_ids for a in self.ancestors(int(g)))

    def ordered_groups(self) -> list[dict]:
        """Groups in nested-set (lft) order, each with lft/rgt as Joomla numbers them."""
        out: list[dict] = []
        counter = [0]

        def visit(group: dict) -> None:
            counter[0] += 1
            row = dict(group, lft=counter[0])
            out.append(row)
            children = sorted((g for g in self.groups.values() if g["parent_id"] == group["id"]),
                              key=lambda g: _core_order(g["id"]))
            for child in children:
                visit(child)
            counter[0] += 1
            row["rgt"] = counter[0]

        for root in sorted((g for g in self.groups.values() if g["parent_id"] == 0), key=lambda g: g["id"]):
            visit(root)
        return out

    # --- users -----------------------------------------------------------------------------------

    def add_user(self, entry: dict) -> dict:
        """Store a user as given (seeding: no form, no checks beyond uniqueness)."""
        username = str(entry.get("username") or "")
        email = str(entry.get("email") or "")
        if not username:
            raise ValueError(f"seed user without username: {entry!r}")
        if self.user_by_login(username):
            raise ValueError(f"seed user {username!r}: username exists")
        user_id = int(entry.get("id") or self.next_id)
        if user_id in self.users:
            raise ValueError(f"seed user {username!r}: id {user_id} exists")
        record = {
            "id": user_id, "name": str(entry.get("name") or username), "username": username, "email": email,
            "block": int(entry.get("block") or 0), "sendEmail": int(entry.get("sendEmail") or 0),
            "registerDate": str(entry.get("registerDate") or now_sql()), "lastvisitDate": None,
            "lastResetTime": None, "resetCount": 0, "requireReset": int(entry.get("requireReset") or 0),
            "groups": [int(g) for g in entry.get("groups") or [2]], "activation": "",
            "token_seed": entry.get("token_seed"), "token_enabled": bool(entry.get("token_enabled", True)),
        }
        self.users[user_id] = record
        self.next_id = max(self.next_id, user_id + 1)
        return record

    def user_by_login(self, username: str) -> dict | None:
        key = collation_key(username)
        return next((u for u in self.users.values() if collation_key(u["username"]) == key), None)

    def user_by_email(self, email: str) -> dict | None:
        key = (email or "").lower()
        return min((u for u in self.users.values() if u["email"].lower() == key), key=lambda u: u["id"],
                   default=None)

    def give_token(self, user_id: int) -> str:
        """A token seed for the user (as the profile's token tab makes one); returns the header value."""
        user = self.users[user_id]
        if not user.get("token_seed"):
            user["token_seed"] = base64.b64encode(secrets.token_bytes(32)).decode()
        return self.token_for(user_id)

    def token_for(self, user_id: int) -> str:
        seed = base64.b64decode(self.users[user_id]["token_seed"])
        digest = hmac.new(self.secret.encode(), seed, hashlib.sha256).hexdigest()
        return base64.b64encode(f"sha256:{user_id}:{digest}".encode()).decode()

    def authenticate(self, token: str) -> dict | None:
        """plugins/api-authentication/token: the user a valid token names, if it may use the API."""
        try:
            algo, user_id, given = base64.b64decode(token, validate=False).decode("ascii").split(":", 2)
            user_id = int(user_id)
        except (ValueError, UnicodeDecodeError):
            return None
        user = self.users.get(user_id)
        if algo not in ("sha256", "sha512") or user is None or not user.get("token_seed"):
            return None
        expected = hmac.new(self.secret.encode(), base64.b64decode(user["token_seed"]), algo).hexdigest()
        if not hmac.compare_digest(expected, given) or not user["token_enabled"]:
            return None
        if not self.inherits(user["groups"], self.token_groups):
            return None
        if user["block"] or user["activation"] or user["requireReset"]:
            return None
        if not self.inherits(user["groups"], self.login_api_groups):
            return None  # core.login.api
        return user

    def can_create(self, user: dict) -> bool:
        return self.inherits(user["groups"], self.create_groups)

    def is_super(self, user: dict) -> bool:
        return self.inherits(user["groups"], {SUPER_USERS})

    # --- create ----------------------------------------------------------------------------------

    def create(self, data: dict, current: dict) -> tuple[dict, str]:
        """UsersController::add() after the permission check: the stored user and its clear password."""
        t = self.text
        labels = t("labels")
        # the form: filters, then validation in field order; up to 3 messages
        name = _form_string(data.get("name"))
        username = _TAG_RE.sub("", _form_string(data.get("username")))
        email = _form_string(data.get("email")).strip()
        password = data.get("password")
        password = "" if password is None else str(password)
        messages = []
        if not name:
            messages.append(t("required") % labels["name"])
        if not username:
            messages.append(t("required") % labels["username"])
        if not self.mail_to_user and not password:
            messages.append(t("required") % labels["password"])
            messages.append(t("required") % labels["password2"])
        elif password and (len(password) < self.minimum_password_length or password != password.strip()):
            messages.append(t("invalid") % labels["password"])
        if not email:
            messages.append(t("required") % labels["email"])
        elif not _EMAIL_RE.match(email):
            messages.append(t("valid_mail"))
        if messages:
            raise SaveRefused(400, "\n".join(messages[:3]), with_code=False)
        groups = data.get("groups")
        if isinstance(groups, dict):
            groups = list(groups.values())
        groups = [int(g) for g in groups or [] if str(g).strip().lstrip("-").isdigit()]
        if not groups:
            raise SaveRefused(400, t("save_failed") % t("no_groups"), with_code=True)

        def refuse(key: str) -> SaveRefused:
            return SaveRefused(400, t("save_failed") % t(key), with_code=True)

        # Table\User::check()
        if not name.strip():
            raise refuse("enter_name")
        if not username.strip():
            raise refuse("enter_username")
        if (_BAD_USERNAME_RE.search(username) or len(username) < 2 or username.strip() != username
                or len(username) > 150):
            raise refuse("valid_username")
        if len(email) > 100 or not is_email_address(email):
            raise refuse("valid_mail")
        if self.user_by_login(username):
            raise refuse("username_in_use")
        if self.user_by_email(email):
            raise refuse("email_in_use")
        # User::save(): only a Super User may grant a group with core.admin
        if not self.is_super(current) and self.inherits(groups, {SUPER_USERS}):
            raise refuse("not_super")
        # User::bind(): 32 random letters and digits (UserHelper::genRandomPassword's alphabet)
        clear = password or "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        record = self.add_user({"name": name, "username": username, "email": email,
                                "block": int(str(data.get("block") or 0) == "1"),
                                "sendEmail": int(str(data.get("sendEmail") or 0) == "1"),
                                "requireReset": int(str(data.get("requireReset") or 0) == "1"),
                                "groups": [2]})
        # unknown ids are dropped without an error: the account may end up in no group at all
        record["groups"] = [g for g in dict.fromkeys(groups) if g in self.groups]
        if self.mail_to_user:
            self.mails.append({"to": record["email"], "subject": t("new_user_subject"), "kind": "new_user",
                               "user_id": record["id"],
                               "body": f"Hello {record['name']},\n\nYou have been added as a User to {self.site_name} "
                                       f"by an Administrator.\n\nUsername: {record['username']}\nPassword: {clear}\n"})
        return record, clear

    # --- password reset ----------------------------------------------------------------------------

    def reset_request(self, email: str) -> None:
        """ResetModel::processResetRequest(): the mail, or nothing (the form never says which)."""
        user = self.user_by_email(email.strip())
        if user is None or user["block"] or self.is_super(user):
            return
        now = datetime.now(UTC)
        last = user["lastResetTime"]
        window_over = last is None or (now - datetime.strptime(last, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                                       ).total_seconds() > self.reset_hours * 3600
        if window_over:
            user["resetCount"] = 1
        elif user["resetCount"] >= self.reset_count:
            return
        else:
            user["resetCount"] += 1
        user["lastResetTime"] = now.strftime("%Y-%m-%d %H:%M:%S")
        code = secrets.token_hex(16)
        user["activation"] = "reset"
        self.mails.append({"to": user["email"], "subject": self.text("reset_subject") % self.site_name,
                           "kind": "password_reset", "user_id": user["id"],
                           "body": f"A request has been made to reset your {self.site_name} account password.\n\n"
                                   f"The verification code is {code}\n"})

    # --- views -------------------------------------------------------------------------------------

    def item(self, user: dict) -> dict:
        attributes = {"groups": {str(g): g for g in user["groups"]}, "id": user["id"], "name": user["name"],
                      "username": user["username"], "email": user["email"], "block": user["block"],
                      "sendEmail": user["sendEmail"], "registerDate": user["registerDate"],
                      "lastvisitDate": user["lastvisitDate"], "lastResetTime": user["lastResetTime"],
                      "resetCount": user["resetCount"]}
        return {"type": "users", "id": str(user["id"]), "attributes": attributes}

    def list_row(self, user: dict) -> dict:
        titles = [self.groups[g]["title"] for g in sorted(user["groups"]) if g in self.groups]
        attributes = {"id": user["id"], "name": user["name"], "username": user["username"], "email": user["email"],
                      "block": user["block"], "sendEmail": user["sendEmail"], "registerDate": user["registerDate"],
                      "lastvisitDate": user["lastvisitDate"], "lastResetTime": user["lastResetTime"],
                      "resetCount": user["resetCount"], "group_count": len(titles), "group_names": "\n".join(titles)}
        return {"type": "users", "id": str(user["id"]), "attributes": attributes}

    def search(self, term: str | None, group_id: int | None = None) -> list[dict]:
        """UsersModel::getListQuery(): search filter, group filter, ordered by name (then id here)."""
        rows = list(self.users.values())
        if term:
            if term.lower().startswith("id:"):
                wanted = _php_int(term[3:])
                rows = [u for u in rows if u["id"] == wanted]
            elif term.lower().startswith("username:"):
                pattern = f"%{term[9:]}%"
                rows = [u for u in rows if like(pattern, u["username"])]
            else:
                pattern = f"%{term.strip()}%"
                rows = [u for u in rows if like(pattern, u["name"]) or like(pattern, u["username"])
                        or like(pattern, u["email"])]
        if group_id:
            rows = [u for u in rows if group_id in u["groups"]]
        return sorted(rows, key=lambda u: (collation_key(u["name"]), u["id"]))


def page_start(offset: int, limit: int, total: int) -> int:
    """ListModel::getStart(): an offset within the last page's reach is moved back to the last page."""
    if limit and offset > total - limit:
        return max(0, (math.ceil(total / limit) - 1) * limit)
    return offset


def _form_string(value) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


def _php_int(text: str) -> int:
    match = re.match(r"\s*[+-]?\d+", text)
    return int(match.group(0)) if match else 0


def _core_order(group_id: int) -> tuple[int, int]:
    # the order the core install's nested set puts Public's children in
    order = {9: 0, 6: 1, 2: 2, 8: 3}
    return (order.get(group_id, 10), group_id)
