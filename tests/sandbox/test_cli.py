"""The sandbox's shared command-line pieces: SIGTERM ends a benchmark as Ctrl-C does, its clean-up included."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A stand-in for a benchmark: it says when it is running, and its `finally` stops "the site" (writes a file).
PROGRAM = """
import sys, time
from sandbox.cli import stop_cleanly_on_sigterm
if sys.argv[1] == "on":
    stop_cleanly_on_sigterm()
try:
    print("running", flush=True)
    time.sleep(60)
finally:
    print("stopping the site", flush=True)
    time.sleep(float(sys.argv[3]))
    open(sys.argv[2], "w").write("stopped")
"""


def started(tmp_path: Path, handler: str, cleanup_seconds: float = 0.0) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "site-stopped"
    process = subprocess.Popen([sys.executable, "-c", PROGRAM, handler, str(marker), str(cleanup_seconds)],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "running\n"
    return process, marker


def test_sigterm_runs_the_clean_up_and_exits_143(tmp_path):
    process, marker = started(tmp_path, "on")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM
    assert marker.read_text() == "stopped"


def test_without_it_sigterm_skips_the_clean_up(tmp_path):
    # what the benchmarks did before: the site was left running
    process, marker = started(tmp_path, "off")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == -signal.SIGTERM
    assert not marker.exists()


def test_a_second_sigterm_during_the_clean_up_ends_the_process_at_once(tmp_path):
    process, marker = started(tmp_path, "on", cleanup_seconds=60)
    process.send_signal(signal.SIGTERM)
    assert process.stdout.readline() == "stopping the site\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == -signal.SIGTERM
    assert not marker.exists()
