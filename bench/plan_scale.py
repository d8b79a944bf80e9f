"""Benchmark: the pure planning step at scale (no CiviCRM, no CMS, no Airflow).

    .venv/bin/python -m bench.plan_scale --contacts 1000000 --users 1000000

Builds synthetic extract output (contacts, CMS users, UFMatch rows) in a child process and writes it
the way extract hands it to the plan task: columnar run files, JSON Lines, each line one chunk of up
to 10,000 rows as an object mapping column name -> list of values. This process then times, one line
each (wall and CPU seconds):

* `read`: json.loads of each line, the chunks' columns concatenated, `pd.DataFrame(columns)` (what
  the plan task does before planning; the strings are those a real decode makes, none shared);
* `candidates`: the candidate usernames as `extract` asks for them (the CMS's sanitiser, sorted and
  deduplicated) from the decoded contact columns: extract's time, reported, not the plan's;
* `frames`: `contacts_frame`, `cms_users_frame`, `links_frame` of the decoded frames;
* `plan`: `plan_contacts`;
* `batches` and `records` (`make_batches`, `json_safe_records`) where those functions still exist.

"Planned and deduped" (issue 12's 5 s at a million) is frames + plan. Peak RSS (ru_maxrss,
tracemalloc off; the synthesis runs in its own process, so it does not count) is reported after the
read, at the end of the plan (issue 12's 2 GB) and at the end. Prints a Markdown table row and
appends it to bench/results/plan_scale.md. Never part of the pass/fail suite. CPU seconds are the
steadier number on a shared machine.

The data: names drawn from a few thousand first and last names (some non-ASCII: Zoë, Ångström,
Иван, 李), 1% of contacts sharing an email with another, 5% whose email an existing CMS user has,
existing usernames that collide with the generated ones, 0.5% already linked, a few with journal
entries, and a few deceased, without email or with an invalid one.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))

import pandas as pd  # noqa: E402

from cms_operators.wordpress.rules import RULES  # noqa: E402
from provisioning import plan as planning  # noqa: E402
from provisioning.plan import (  # noqa: E402
    CMS_USER_COLUMNS,
    CONTACT_COLUMNS,
    LINK_COLUMNS,
    cms_users_frame,
    contacts_frame,
    links_frame,
    plan_contacts,
)
from provisioning.settings import Settings  # noqa: E402
from provisioning.usernames import candidate_usernames  # noqa: E402

RESULTS = REPO / "bench" / "results" / "plan_scale.md"
CHUNK_ROWS = 10_000  # rows per line of a columnar run file
#: the phases after the plan, timed only while plan.py still has these functions
LATER_PHASES = {"batches": "make_batches", "records": "json_safe_records"}
HEADER = (
    "| command | contacts | users | read s | candidates s | frames s | plan s | frames + plan s "
    "| batches s | records s | peak RSS after read MB | peak RSS to plan MB | peak RSS MB |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
)

_SPECIAL_FIRST = ["Zoë", "José", "Łukasz", "Søren", "Ærin", "Иван", "李", "Anne-Marie", "Mary Jane", "D'Arcy",
                  "Ðorđe", "Şule", "Ørjan", "Renée", "Jürgen", "Ţoma", "Ğül", "Ñuño", "Ēriks", "Ïsa"]
_SPECIAL_LAST = ["Ångström", "Müller", "O'Brien", "van der Berg", "Petrov", "Петров", "小龍", "Nuñez",
                 "Straße", "Łęcki", "Ødegård", "García-López", "de la Cruz", "Þórsson", "Ünal", "Ng", "X",
                 "Smith  Jones", " Brown ", "Dvořák"]
_SYLLABLES = ["an", "be", "ca", "dor", "el", "fi", "ga", "hel", "is", "jo", "ka", "li", "mar", "no", "os",
              "pe", "qui", "ra", "sa", "to", "ul", "ve", "wil", "xe", "ya", "zo"]


def _names(rng: random.Random, count: int, special: list[str]) -> list[str]:
    names = list(special)
    seen = set(names)
    while len(names) < count:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def synthetic_inputs(contacts: int, users: int, seed: int = 7) -> tuple[list[dict], list[dict], list[dict]]:
    """(contacts, cms_users, links) as `extract` hands them to the plan."""
    rng = random.Random(seed)
    first_names = _names(rng, 3000, _SPECIAL_FIRST)
    last_names = _names(rng, 5000, _SPECIAL_LAST)
    people = []
    for index in range(contacts):
        contact_id = index + 2
        first, last = rng.choice(first_names), rng.choice(last_names)
        people.append({
            "contact_id": contact_id, "contact_type": "Individual", "first_name": first, "last_name": last,
            "display_name": f"{first} {last}", "email": f"person{contact_id}@bench.example",
            "is_deceased": False, "do_not_email": rng.random() < 0.02, "preferred_language": "en_US",
            "uf_id": None, "uf_name": None, "sources": ["group:5"], "attempts": 0, "tried": 0,
            "email_note": None, "journal": [], "cms_login": None,
        })
    # CMS users: plain ones first; some get a contact's email or a generated-looking username below
    accounts = [{"uf_id": 10 + index, "username": f"member{index}", "email": f"member{index}@elsewhere.example",
                 "roles": ["subscriber"], "registered": "2024-01-01T00:00:00Z", "is_admin": False}
                for index in range(users)]
    accounts[0]["roles"], accounts[0]["is_admin"] = ["administrator"], True
    order = list(range(contacts))
    rng.shuffle(order)
    slices = iter([0.01, 0.05, 0.005, 0.0001, 0.001, 0.001, 0.001, 0.01])
    start = 0

    def take() -> list[int]:
        nonlocal start
        size = max(1, round(contacts * next(slices))) if contacts >= 100 else 0
        rows, start = order[start : start + size], start + size
        return rows

    shared, same_email, linked, journaled, deceased, no_email, invalid, retried = (take() for _ in range(8))
    for row in shared:  # 1%: the email of another contact, sometimes in another case
        other = people[rng.randrange(contacts)]["email"]
        people[row]["email"] = other.upper() if rng.random() < 0.3 else other
    user_slots = iter(rng.sample(range(1, users), min(users - 1, len(same_email) + len(linked) + len(journaled)
                                                      + contacts // 50)))
    for row in same_email:  # 5%: an existing account has the email
        accounts[next(user_slots)]["email"] = people[row]["email"]
    links = []
    for row in linked:  # 0.5%: already linked (UFMatch's uf_name is the email)
        account = accounts[next(user_slots)]
        person = people[row]
        person["uf_id"], person["uf_name"], person["cms_login"] = account["uf_id"], person["email"], account["username"]
        links.append({"contact_id": person["contact_id"], "uf_id": account["uf_id"], "uf_name": person["email"]})
    for row in journaled:  # an earlier run made an account and never linked it
        account = accounts[next(user_slots)]
        people[row]["journal"] = [{"activity_id": 900000 + row, "status": "Scheduled",
                                   "usernames": [account["username"]], "sent": "2025-01-01T00:00:00Z",
                                   "uf_id": None, "username": None, "mail": ""}]
        people[row]["attempts"] = 1
    for row in deceased:
        people[row]["is_deceased"] = True
    for row in no_email:
        people[row]["email"] = None
    for row in invalid:
        people[row]["email"] = "not an email"
    for row, attempts in zip(retried, [1, 2, 3, 4] * len(retried), strict=False):
        people[row]["attempts"] = attempts
    # 2%: an account whose username a generated login will collide with (first.last, pattern's output)
    for _ in range(contacts // 50):
        person = people[rng.randrange(contacts)]
        accounts[next(user_slots)]["username"] = f"{person['first_name']}.{person['last_name']}".lower()
    return people, accounts, links


def write_columnar(path: Path, rows: list[dict], columns: list[str]) -> None:
    """The rows as a columnar run file: one JSON line per chunk, column name -> list of values."""
    with path.open("w") as out:
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            out.write(json.dumps({name: [row.get(name) for row in chunk] for name in columns}) + "\n")


def read_columnar(path: Path) -> pd.DataFrame:
    """The run file as the plan task reads it: each line decoded, the chunks' columns concatenated."""
    columns: dict[str, list] = {}
    with path.open() as lines:
        for line in lines:
            for name, values in json.loads(line).items():
                columns.setdefault(name, []).extend(values)
    return pd.DataFrame(columns)


def _write_inputs(folder: str, contacts: int, users: int) -> None:
    people, accounts, links = synthetic_inputs(contacts, users)
    folder_path = Path(folder)
    write_columnar(folder_path / "contacts.jsonl", people, CONTACT_COLUMNS)
    write_columnar(folder_path / "cms_users.jsonl", accounts, CMS_USER_COLUMNS)
    write_columnar(folder_path / "links.jsonl", links, LINK_COLUMNS)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


class _Clock:
    """Wall and CPU seconds of each phase."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def time(self, phase: str, work, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = work(*args)
        self.wall[phase] = time.perf_counter() - wall
        self.cpu[phase] = time.process_time() - cpu
        return result


def _candidates(contact_columns: dict, patterns: list[str]) -> list[str]:
    return sorted(set(candidate_usernames(contact_columns, patterns, RULES.sanitize_username)) - {""})


def _frames(contacts: pd.DataFrame, cms_users: pd.DataFrame, links: pd.DataFrame) -> tuple:
    return contacts_frame(contacts), cms_users_frame(cms_users), links_frame(links)


def run(contacts: int, users: int) -> dict:
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    settings = Settings(trigger_groups=["new_members"])
    clock = _Clock()
    with tempfile.TemporaryDirectory(prefix="plan_scale-") as folder:
        # the synthetic dicts live and die in a child process: its memory is not this one's peak
        child = multiprocessing.get_context("fork").Process(target=_write_inputs, args=(folder, contacts, users))
        child.start()
        child.join()
        if child.exitcode:
            raise RuntimeError(f"writing the inputs failed ({child.exitcode})")
        gc.collect()
        inputs = clock.time("read", lambda: tuple(read_columnar(Path(folder) / f"{name}.jsonl")
                                                  for name in ("contacts", "cms_users", "links")))
    rss_read = peak_rss_mb()
    contact_columns = {name: inputs[0][name] for name in ("contact_id", "first_name", "last_name",
                                                          "display_name", "email")}
    patterns = [settings.username_pattern, settings.username_fallback_pattern]
    candidates = clock.time("candidates", _candidates, contact_columns, patterns)
    del contact_columns
    frames = clock.time("frames", _frames, *inputs)
    del inputs
    plan = clock.time("plan", plan_contacts, *frames, settings, RULES)
    rss_plan = peak_rss_mb()
    del frames
    measured = {"candidate_count": len(candidates), "outcomes": plan["outcome"].value_counts().to_dict()}
    if hasattr(planning, "make_batches"):
        batches = clock.time("batches", planning.make_batches, plan, settings.batch_size)
        measured["batch_rows"] = sum(len(batch) for batch in batches)
        del batches
    if hasattr(planning, "json_safe_records"):
        measured["records"] = len(clock.time("records", planning.json_safe_records, plan))
    return {"wall": clock.wall, "cpu": clock.cpu, "rss_read": rss_read, "rss_plan": rss_plan,
            "rss_peak": peak_rss_mb(), **measured}


def _cell(measured: dict, phases: tuple[str, ...]) -> str:
    wall, cpu = measured["wall"], measured["cpu"]
    if not all(phase in wall for phase in phases):
        return "–"
    return f"{sum(wall[phase] for phase in phases):.2f} ({sum(cpu[phase] for phase in phases):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--label", default="", help="a note for the results row (e.g. 'before')")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file the row is added to")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append to the results file")
    args = parser.parse_args()

    measured = run(args.contacts, args.users)
    wall, cpu = measured["wall"], measured["cpu"]
    for phase in wall:
        print(f"{phase:>10}: {wall[phase]:7.2f} s wall, {cpu[phase]:7.2f} s CPU")
    print(f"frames + plan: {_cell(measured, ('frames', 'plan'))} s wall (CPU)")
    print(f"peak RSS after read {measured['rss_read']:.0f} MB, to the end of the plan {measured['rss_plan']:.0f} MB, "
          f"at the end {measured['rss_peak']:.0f} MB; {measured['candidate_count']} distinct candidates")
    print("outcomes:", measured["outcomes"])
    command = f"python -m bench.plan_scale --contacts {args.contacts} --users {args.users}"
    label = f" ({args.label})" if args.label else ""
    cells = " | ".join(_cell(measured, phases) for phases in
                       (("read",), ("candidates",), ("frames",), ("plan",), ("frames", "plan"),
                        ("batches",), ("records",)))
    row = (f"| `{command}`{label} | {args.contacts:,} | {args.users:,} | {cells} "
           f"| {measured['rss_read']:.0f} | {measured['rss_plan']:.0f} | {measured['rss_peak']:.0f} |")
    print(row)
    if not args.no_save:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        if not args.results.exists():
            args.results.write_text("# Pure planning step at scale\n\n" + HEADER)
        with args.results.open("a") as results:
            results.write(row + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
