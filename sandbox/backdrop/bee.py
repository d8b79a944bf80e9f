"""The emulated `bee`: `python -m sandbox.backdrop.bee --root=<site folder> [--base-url=...] eval '<code>'`.

It cannot run PHP. It accepts exactly what BeeHook sends: `eval` of the hook's bootstrap (which reads
the call from stdin), and a program that declares itself (`// cmsuser-bee-program: 1`) and the
operation asked for (`// operation: <name>`); it then does what bee_ops.php does on a real Backdrop,
on the site folder's state (sandbox/backdrop/site.py): the same answers between the same markers,
the same exit codes. Anything else gets what bee gives for it: text for people and exit 0.

Backdrop's rules it keeps (confirmed against the real site by tests/contract/test_backdrop_contract.py):
user_validate_name; FILTER_VALIDATE_EMAIL and 254 characters; name and mail taken as the database's
utf8mb4_general_ci compares them (case and accents ignored); roles and user fields that exist; a
language only when the site has it; the "created by an administrator" mail with a one-time link.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import time
import unicodedata
from pathlib import Path

from sandbox.backdrop.site import STATE_DIR, BackdropEmulator

PROGRAM_VERSION = "1"
OPERATIONS = ("facts", "find_users", "users_by_id", "create_users", "send_password_mails")
_RED, _YELLOW, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[0m"
_NAME_ASCII_RE = re.compile(r"[^\x80-\U0010ffff a-zA-Z0-9@+_.'-]")
_NAME_BAD_RE = re.compile("[\x80-\xa0\xad\u2000-\u200f\u2028-\u202f\u205f-\u206f\ufeff\uff01-\uff60"
                          "\ufff9-\ufffd\x00-\x1f]")
_EMAIL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
                       r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


def _bee_error(text: str) -> int:
    """What bee does with an error: coloured text on stdout, exit status 0."""
    print(f"{_RED} [Error] {_RESET}{text}")
    return 0


def _emit(marker: str, value: dict) -> None:
    sys.stdout.write(f"\n@@cmsuser:{marker}@@ {json.dumps(value, ensure_ascii=False)}\n")
    sys.stdout.flush()


def _key(value: str) -> str:
    """utf8mb4_general_ci, closely enough: case and accents ignored."""
    folded = unicodedata.normalize("NFKD", value or "")
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).casefold()


def _name_problem(name: str) -> str | None:
    if not name:
        return "You must enter a username."
    if name.startswith(" "):
        return "The username cannot begin with a space."
    if name.endswith(" "):
        return "The username cannot end with a space."
    if "  " in name:
        return "The username cannot contain multiple spaces in a row."
    if _NAME_ASCII_RE.search(name) or _NAME_BAD_RE.search(name):
        return "The username contains an illegal character."
    if len(name) > 60:
        return f"The username {name} is too long: it must be 60 characters or less."
    return None


def _row(user: dict) -> dict:
    return {"uid": user["uid"], "name": user["name"], "mail": user["mail"], "status": user["status"],
            "roles": sorted(user.get("roles") or []), "created": user["created"], "language": user.get("language", "")}


class Call:
    def __init__(self, site: BackdropEmulator, state: dict, base_url: str, fault: dict | None):
        self.site, self.state, self.base_url, self.fault = site, state, base_url or "http://site", fault
        self.items = 0

    def item(self, value: dict) -> None:
        _emit("item", value)
        self.items += 1
        if self.fault and self.fault.get("kill_after_items") is not None and self.items >= self.fault["kill_after_items"]:
            self.site._write(self.state)  # what was saved stays saved: each create is its own transaction
            os.kill(os.getpid(), signal.SIGKILL)

    def facts(self, _args: dict) -> dict:
        s = self.state
        return {"facts": {"version": s["version"], "site_name": s["site_name"], "roles": s["roles"],
                          "admin_role": s["admin_role"],
                          "fields": {k: {"type": v["type"], "label": v["label"]} for k, v in sorted(s["fields"].items())},
                          "languages": sorted(s["languages"]), "default_language": s["default_language"],
                          "mail_notify": bool(s["notify"]), "max_uid": max(u["uid"] for u in s["users"])}}

    def find_users(self, args: dict) -> dict:
        emails = {_key(str(e)) for e in args.get("emails") or [] if str(e)}
        names = {_key(str(n)) for n in args.get("names") or [] if str(n)}
        rows = [_row(u) for u in self.state["users"] if _key(u["mail"]) in emails or _key(u["name"]) in names]
        return {"users": sorted(rows, key=lambda r: r["uid"])}

    def users_by_id(self, args: dict) -> dict:
        wanted = {int(i) for i in args.get("uids") or []}
        return {"users": [_row(u) for u in sorted(self.state["users"], key=lambda u: u["uid"]) if u["uid"] in wanted]}

    def _taken(self, column: str, value: str) -> int:
        key = _key(value)
        return next((u["uid"] for u in self.state["users"] if _key(u[column]) == key), 0)

    def _create_one(self, request: dict) -> dict:
        name = str(request.get("name") or "")
        mail = str(request.get("mail") or "").strip()
        problem = _name_problem(name)
        if problem:
            return {"error": "invalid_name", "field": "name", "message": problem}
        if not mail or len(mail) > 254 or not _EMAIL_RE.fullmatch(mail):
            return {"error": "invalid_mail", "field": "mail", "message": "The email address is not valid."}
        if uid := self._taken("name", name):
            return {"error": "name_taken", "field": "name", "uid": uid, "message": "The name is already taken."}
        if uid := self._taken("mail", mail):
            return {"error": "mail_taken", "field": "mail", "uid": uid, "message": "The email address is already taken."}
        roles = []
        for role in request.get("roles") or []:
            if role not in self.state["roles"]:
                return {"error": "unknown_role", "field": "roles", "message": f"The role {role} does not exist."}
            roles.append(role)
        fields = {}
        for field, value in (request.get("fields") or {}).items():
            if field not in self.state["fields"]:
                return {"error": "unknown_field", "field": field, "message": f"The user field {field} does not exist."}
            fields[field] = str(value)
        language = str(request.get("language") or "")
        user = {"uid": self.state["next_uid"], "name": name, "mail": mail, "status": 1, "roles": sorted(set(roles)),
                "created": int(time.time()), "language": language if language in self.state["languages"] else "",
                "fields": fields}
        self.state["next_uid"] += 1
        self.state["users"].append(user)
        return {"user": _row(user)}

    def create_users(self, args: dict) -> dict:
        if not isinstance(args.get("users"), list):
            raise _Refused("bad_arguments", 'create_users needs a list "users".')
        results = []
        for index, request in enumerate(args["users"]):
            result = {**self._create_one(dict(request)), "index": index}
            results.append(result)
            self.item(result)
        return {"results": results}

    def send_password_mails(self, args: dict) -> dict:
        mail = args.get("mail", "register_admin_created")
        if mail not in ("register_admin_created", "password_reset"):
            raise _Refused("bad_arguments", f"send_password_mails: no mail {mail}.")
        results = []
        for uid in dict.fromkeys(int(i) for i in args.get("uids") or []):
            user = next((u for u in self.state["users"] if u["uid"] == uid and uid > 0), None)
            if user is None:
                results.append({"uid": uid, "error": "no_user", "message": f"There is no account {uid}."})
            elif not user["status"]:
                results.append({"uid": uid, "error": "blocked", "message": f"Account {uid} is blocked."})
            elif not self.state["notify"] and mail == "register_admin_created":
                results.append({"uid": uid, "error": "notify_off", "message": 'The site does not send the "created '
                                                                               'by an administrator" mail (user mail settings).'})
            elif not self.state["mail_works"]:
                results.append({"uid": uid, "error": "mail_failed", "message": "The site could not send the mail."})
            else:
                stamp = int(time.time())
                token = hashlib.sha256(f"{uid}:{stamp}:{user['mail']}".encode()).hexdigest()[:43]
                link = f"{self.base_url}/user/reset/{uid}/{stamp}/{token}"
                reset = mail == "password_reset"
                self.state["mails"].append({
                    "to": user["mail"], "uid": uid, "key": mail,
                    "subject": f"Password reset information for {user['name']} at {self.state['site_name']}" if reset
                    else f"An administrator created an account for you at {self.state['site_name']}",
                    "body": f"{user['name']},\n\nA request to reset the password for your account has been made at "
                            f"{self.state['site_name']}.\n\n{link}\n" if reset else
                            f"{user['name']},\n\nA site administrator at {self.state['site_name']} has created an "
                            f"account for you.\n\n{link}\n",
                    "language": user.get("language") or self.state["default_language"]})
                results.append({"uid": uid, "sent": True})
        return {"results": results}


class _Refused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _declared(program: str) -> tuple[str | None, set[str]]:
    version = re.search(r"^// cmsuser-bee-program: (\S+)", program, re.M)
    return (version.group(1) if version else None), set(re.findall(r"^// operation: (\w+)", program, re.M))


def _take_fault(state: dict, operation: str) -> dict | None:
    for fault in state["faults"]:
        if fault["operation"] in (None, operation) and fault["times"] > 0:
            fault["times"] -= 1
            state["faults"] = [f for f in state["faults"] if f["times"] > 0]
            return dict(fault)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = {}
    words = []
    for arg in argv:
        if arg.startswith("--") and not words:
            key, _, value = arg[2:].partition("=")
            options[key] = value
        else:
            words.append(arg)
    print(f"{_YELLOW}(emulated bee: Backdrop {'' if not words else words[0]}){_RESET}")  # bee's own noise
    if not words or words[0] not in ("eval", "ev", "php-eval"):
        return _bee_error(f"The emulated bee runs only `eval` of the cmsuser program, not {words[:1]!r}.")
    root = Path(options.get("root") or os.getcwd())
    if not (root / STATE_DIR / "state.json").is_file():
        return _bee_error("The required bootstrap level for 'eval' is not ready.")
    code = " ".join(words[1:])
    if "stream_get_contents(STDIN)" not in code or '$cmsuser_call["program"]' not in code:
        return _bee_error("The emulated bee cannot run PHP: only the cmsuser bootstrap is known.")
    try:
        call = json.loads(sys.stdin.read() or "null")
    except ValueError:
        call = None
    if not isinstance(call, dict) or not call.get("program"):
        _emit("answer", {"error": "no_input"})
        return 2
    version, declared = _declared(str(call["program"]))
    operation = str(call.get("operation") or "")
    if version != PROGRAM_VERSION or operation not in declared or operation not in OPERATIONS:
        _emit("answer", {"error": "unknown_operation",
                         "message": f"No operation {operation} (the emulator knows program {PROGRAM_VERSION}: "
                                    f"{', '.join(OPERATIONS)})."})
        return 2
    site = BackdropEmulator(root)
    with site.locked() as state:
        state["calls"].append({"operation": operation, "argv": argv, "arguments": call.get("arguments") or {},
                               "at": time.time()})
        fault = _take_fault(state, operation)
    if fault and fault.get("delay"):
        time.sleep(float(fault["delay"]))  # a slow site: the call is recorded, nothing is locked meanwhile
    if fault and fault.get("exit_code") is not None and fault.get("no_answer"):
        print(f"{_RED} [Error] {_RESET}The site could not be bootstrapped.")
        return int(fault["exit_code"])
    with site.locked() as state:
        runner = Call(site, state, options.get("base-url", ""), fault)
        try:
            answer = getattr(runner, operation)(dict(call.get("arguments") or {}))
        except _Refused as exc:
            _emit("answer", {"error": exc.code, "message": exc.message})
            return 2
    _emit("answer", answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
