"""An emulator in a process of its own, as a real site is: its work never takes the caller's interpreter lock.

In one Python process, every thread takes turns on one interpreter lock. Two emulators served from one process
slow each other down: a CiviCRM `save` of hundreds of records holds the lock in 5 ms turns while a CMS create
waits for its turn to answer. A real CiviCRM and a real CMS never do that to each other, nor to the client
measuring them. `Apart` builds the emulator in a forked child process, which serves it on its port; the
parent keeps a handle that runs the emulator's methods (`inject`, `reset_calls`, ...) and reads its
attributes (`calls`, `mails`, `url`) in the child, their values pickled back.

Forked, so the seed and the factory need not be picklable; fork before this process starts threads of its own
(the emulators' servers, Airflow's components).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import traceback
from collections.abc import Callable
from typing import Any

START_TIMEOUT = 120.0  # seconds a child may take to seed and start (100,000 contacts take a few)
_METHOD = ("apart", "method")  # the child's answer for an attribute that is a method: call it there


class ApartError(RuntimeError):
    """The emulator in the child raised; the message carries its traceback."""


def _serve(pipe, build: Callable[[], tuple[Any, dict]]) -> None:
    try:
        emulator, facts = build()
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        pipe.send(("error", traceback.format_exc()))
        return
    pipe.send(("ok", facts))
    try:
        while True:
            try:
                kind, name, args, kwargs = pipe.recv()
            except EOFError:  # the parent is gone
                return
            if kind == "stop":
                break
            try:
                value = getattr(emulator, name)
                if kind == "call":
                    value = value(*args, **kwargs)
                elif callable(value):
                    value = _METHOD
                pipe.send(("ok", value))
            except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
                pipe.send(("error", traceback.format_exc()))
    finally:
        emulator.stop()
        with contextlib.suppress(OSError):  # the parent may be gone
            pipe.send(("ok", None))


class Apart:
    """The emulator `build()` makes, seeds and starts, in a child process. `build` returns the emulator and a dict
    of facts the parent needs at once (its url, its connection), kept in `facts`."""

    def __init__(self, build: Callable[[], tuple[Any, dict]], name: str = "emulator"):
        context = multiprocessing.get_context("fork")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, build), name=f"apart-{name}", daemon=True)
        self._process.start()
        child.close()
        self.facts: dict = self._answer(START_TIMEOUT)

    @property
    def emulator(self) -> Apart:
        """What stands for the emulator itself: this handle (the same face as sandbox.sites' in-process one)."""
        return self

    def _answer(self, timeout: float | None = None):
        if timeout is not None and not self._pipe.poll(timeout):
            self._process.kill()
            raise ApartError(f"the emulator's process did not answer within {timeout:g} s")
        status, value = self._pipe.recv()
        if status == "error":
            raise ApartError(f"the emulator's process raised:\n{value}")
        return value

    def call(self, name: str, *args, **kwargs):
        """`emulator.name(*args, **kwargs)` in the child; its return value."""
        self._pipe.send(("call", name, args, kwargs))
        return self._answer()

    @property
    def url(self) -> str:
        return self.facts["url"]

    @property
    def pid(self) -> int:
        """The process serving the emulator (to measure what it costs)."""
        return self._process.pid

    def __getattr__(self, name: str):
        """`emulator.name` in the child: a copy of its value, or, for a method, a function calling it there."""
        if name.startswith("_"):
            raise AttributeError(name)
        self._pipe.send(("get", name, (), {}))
        value = self._answer()
        if value == _METHOD:
            return lambda *args, **kwargs: self.call(name, *args, **kwargs)
        return value

    def stop(self) -> None:
        if not self._process.is_alive():
            return
        try:
            self._pipe.send(("stop", "", (), {}))
            self._answer(30)
        except (OSError, EOFError, ApartError):
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
