"""THE bare create loop every benchmark compares the pipeline with (issue 12), defined once here.

`concurrency` threads, each with its own CMS session (`open_backend()`: one HTTP session, or one SSH session
for Backdrop), take accounts from one shared queue and make, per account, exactly the CMS calls the pipeline
makes for a new contact: `create_user(...)`, then `send_password_mail(user)` when `notify` is on. Nothing
else: no CiviCRM, no journal, no locks, no look-ups. Never part of the pass/fail suite's timings.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable

import psutil


def bare_people(contacts: int, prefix: str = "bare", first_id: int = 2) -> list[dict]:
    """`contacts` distinct new accounts (unique login and email), in the shape bare_loop takes."""
    return [{"username": f"{prefix}{i}.last{i}", "email": f"{prefix}{i}@bench.example",
             "first_name": f"{prefix.capitalize()}{i}", "last_name": f"Last{i}", "display_name": ""}
            for i in range(first_id, first_id + contacts)]


def bare_loop(open_backend: Callable[[], object], people: Iterable[dict], *, roles: list[str], notify: bool,
              concurrency: int = 1) -> dict:
    """Create every account of `people` (dicts: username, email, first_name, last_name, display_name) on
    `concurrency` threads. Returns `seconds` (wall, first thread started to last finished, the threads'
    sessions opened inside; one session is opened and closed before, off the clock), `created`, `mails`,
    `cpu_seconds` (this process's user+system CPU over the loop, so with whatever else runs in it, e.g.
    in-process emulators) and `thread_cpu_seconds` (the loop threads' own CPU only). The first error the
    CMS raises stops every thread and is raised."""
    work: queue.SimpleQueue = queue.SimpleQueue()
    for person in people:
        work.put(person)
    counts = {"created": 0, "mails": 0, "thread_cpu": 0.0}
    tally = threading.Lock()
    failed: list[BaseException] = []

    def worker() -> None:
        started_cpu = time.thread_time()
        backend = None
        created = mails = 0
        try:
            backend = open_backend()
            while not failed:
                try:
                    person = work.get_nowait()
                except queue.Empty:
                    break
                user = backend.create_user(username=person["username"], email=person["email"],
                                           first_name=person.get("first_name", ""),
                                           last_name=person.get("last_name", ""),
                                           display_name=person.get("display_name", ""), roles=list(roles))
                created += 1
                if notify:
                    backend.send_password_mail(user)
                    mails += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            failed.append(exc)
        finally:
            if backend is not None and hasattr(backend, "close"):
                backend.close()
            with tally:
                counts["created"] += created
                counts["mails"] += mails
                counts["thread_cpu"] += time.thread_time() - started_cpu

    # the process's first session pays for imports and Airflow's connection lookup (seconds, once)
    warm = open_backend()
    if hasattr(warm, "close"):
        warm.close()
    process = psutil.Process()
    threads = [threading.Thread(target=worker, name=f"bare-{n}", daemon=True)
               for n in range(max(1, concurrency))]
    cpu_before = process.cpu_times()
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    cpu_after = process.cpu_times()
    if failed:
        raise failed[0]
    return {"seconds": seconds, "created": counts["created"], "mails": counts["mails"],
            "cpu_seconds": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
            "thread_cpu_seconds": counts["thread_cpu"], "concurrency": len(threads)}
