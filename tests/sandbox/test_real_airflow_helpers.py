"""sandbox/real_airflow.py's own helpers (the stack itself runs in tests/dags and tests/bench)."""

from __future__ import annotations

import importlib.util
import marshal
import os
from pathlib import Path

from sandbox.real_airflow import compile_code


def _bytecode(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))  # where an import looks for it


def _value_in(pyc: Path) -> int:
    namespace: dict = {}
    exec(marshal.loads(pyc.read_bytes()[16:]), namespace)  # 16: the header of a .pyc
    return namespace["VALUE"]


def test_compile_code_writes_every_modules_bytecode_and_compiles_again_only_what_changed(tmp_path):
    package = tmp_path / "plugins" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 0\n")
    (package / "mod.py").write_text("VALUE = 1\n")
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "a_dag.py").write_text("VALUE = 3\n")

    compile_code(tmp_path / "plugins", tmp_path / "dags")

    for source, value in ((package / "__init__.py", 0), (package / "mod.py", 1), (tmp_path / "dags" / "a_dag.py", 3)):
        assert _value_in(_bytecode(source)) == value, source
    untouched = _bytecode(package / "__init__.py").stat().st_mtime_ns

    (package / "mod.py").write_text("VALUE = 2  # changed\n")
    later = (package / "mod.py").stat().st_mtime + 2  # compileall compares whole seconds of the mtime
    os.utime(package / "mod.py", (later, later))
    compile_code(tmp_path / "plugins", tmp_path / "dags")

    assert _value_in(_bytecode(package / "mod.py")) == 2
    assert _bytecode(package / "__init__.py").stat().st_mtime_ns == untouched


def test_the_benchmarks_deployment_timings_are_airflows_own_defaults():
    """Benchmarks run the stack with what a deployment has: these must be Airflow's defaults, not guesses."""
    from airflow.configuration import conf

    from sandbox.real_airflow import AIRFLOW_DEFAULT_TIMINGS

    for variable, value in AIRFLOW_DEFAULT_TIMINGS.items():
        _, section, key = variable.split("__", 2)
        assert float(conf.get_default_value(section.lower(), key.lower())) == float(value), variable
