"""The CMS emulators of the sandbox, by `cms_type` (the name the settings and the CMS registry use).

Adding a CMS emulator is one line in `EMULATORS`: the demo, the end-to-end tests and the benchmark
then start it (`sandbox.sites.started_sites(cms_type=...)`, seeded from the seed's `<cms_type>:`
section), and `python -m sandbox <cms_type>` serves it when its package has an `add_cli`.
Emulators are imported only when asked for.

What the sandbox needs of an emulator package: `sandbox_site(secret)` makes a fresh site whose API
user authenticates with `secret` where the CMS lets a client choose it (WordPress: the application
password; Joomla makes its own token), and `sandbox_connection(site)` gives the CMS connection's
fields for a started site (`host`, `login`, `password`, `extra`). A site has `seed(dict)`,
`start(host)` (sets `url`), `stop()`, use as a context manager, and `calls`, `mails`, `users` and
`inject(...)` for the tests.
"""

from __future__ import annotations

import importlib

#: cms_type -> the emulator's package
EMULATORS: dict[str, str] = {
    "wordpress": "sandbox.wordpress",
    "joomla": "sandbox.joomla",
    "drupal": "sandbox.drupal",
    "backdrop": "sandbox.backdrop",
    "drupal7": "sandbox.drupal7",
}


def names() -> tuple[str, ...]:
    return tuple(EMULATORS)


def package(cms_type: str):
    """The emulator package of `cms_type`, imported now; ValueError names the CMSs that have one."""
    try:
        target = EMULATORS[cms_type]
    except KeyError:
        raise ValueError(f"the sandbox has no emulator for cms_type {cms_type!r}; it has one for: "
                         + ", ".join(EMULATORS)) from None
    return importlib.import_module(target)


def cli_modules() -> tuple[str, ...]:
    """The emulator packages, each of which may add a `python -m sandbox <cms_type>` subcommand."""
    return tuple(EMULATORS.values())
