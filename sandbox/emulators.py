"""The CMS emulators of the sandbox, by `cms_type` (the name the settings and the CMS registry use).

Adding a CMS emulator is one line in `EMULATORS`: the demo, the end-to-end tests and the benchmark
then start it (`sandbox.sites.started_sites(cms_type=...)`, seeded from the seed's `<cms_type>:`
section), and `python -m sandbox <cms_type>` serves it when its package has an `add_cli`.
Emulators are imported only when asked for.

What the sandbox needs of an emulator class: `cls(login=..., app_password=...)` makes a site whose
API user has those credentials (the CMS connection's login and password), `seed(dict)`,
`start(host)` (sets `url`), `stop()`, use as a context manager, and `calls`, `mails`, `users` and
`inject(...)` for the tests.
"""

from __future__ import annotations

import importlib

#: cms_type -> "package:Class" of its emulator
EMULATORS: dict[str, str] = {
    "wordpress": "sandbox.wordpress:WordPressEmulator",
}


def names() -> tuple[str, ...]:
    return tuple(EMULATORS)


def emulator_class(cms_type: str) -> type:
    """The emulator class of `cms_type`, imported now; ValueError names the CMSs that have one."""
    try:
        target = EMULATORS[cms_type]
    except KeyError:
        raise ValueError(f"the sandbox has no emulator for cms_type {cms_type!r}; it has one for: "
                         + ", ".join(EMULATORS)) from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def cli_modules() -> tuple[str, ...]:
    """The emulator packages, each of which may add a `python -m sandbox <cms_type>` subcommand."""
    return tuple(target.partition(":")[0] for target in EMULATORS.values())
