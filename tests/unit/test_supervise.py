"""The supervisor's restart policy, what it takes from a log to report as the last error, and
its loop over short-lived real processes (no broker, no Milvus)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shopvec.supervise import (
    Backoff,
    ChildSpec,
    ChildStatus,
    Supervisor,
    describe_exit,
    last_error,
    read_state,
    write_spec,
)


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay(uptime_s=0.5) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_minute_up_starts_the_backoff_over() -> None:
    backoff = Backoff()
    for _ in range(5):
        backoff.next_delay(uptime_s=2.0)
    assert backoff.next_delay(uptime_s=59.0) == 30
    assert backoff.next_delay(uptime_s=60.0) == 1
    assert backoff.next_delay(uptime_s=3.0) == 2


def test_backoff_stays_bounded_after_many_failures() -> None:
    backoff = Backoff(initial_s=0.5, factor=3.0, max_s=10.0)
    for _ in range(5000):
        delay = backoff.next_delay(uptime_s=0.0)
    assert delay == 10.0


def test_the_last_error_is_the_exception_line_of_a_traceback() -> None:
    text = "\n".join(
        [
            "starting",
            "Traceback (most recent call last):",
            '  File "workers/query.py", line 12, in main',
            "    raise ValueError('no such collection')",
            "ValueError: no such collection",
        ]
    )
    assert last_error(text, exit_code=1) == "ValueError: no such collection"


def test_a_json_error_line_gives_its_message_and_its_exception() -> None:
    record = {
        "level": "error",
        "logger": "workers",
        "msg": "query: loop failed",
        "exc": "Traceback (most recent call last):\n  File x\nRuntimeError: broker gone",
    }
    text = "\n".join([json.dumps({"level": "info", "msg": "started"}), json.dumps(record)])
    assert last_error(text, exit_code=1) == "query: loop failed: RuntimeError: broker gone"


def test_the_later_of_an_error_line_and_a_traceback_wins() -> None:
    text = "Traceback (most recent call last):\n  File x\nKeyError: 'a'\nERROR: retry failed\n"
    assert last_error(text) == "ERROR: retry failed"


def test_a_clean_or_killed_exit_without_an_error_reports_none() -> None:
    assert last_error("started\nserving\n", exit_code=None) is None
    assert last_error("started\nserving\n", exit_code=0) is None
    assert last_error("usage: x [-h]\nx: bad flag\n", exit_code=2) == "x: bad flag"


def test_the_last_error_is_cut_short() -> None:
    found = last_error("ERROR " + "x" * 1000)
    assert found is not None and len(found) == 300 and found.endswith("…")


def test_escape_sequences_and_control_characters_never_reach_the_last_error() -> None:
    hostile = "\x1b[31mERROR\x1b[0m \x1b]0;owned\x07boom\r\x08\x9b2J\u202eevil\x00"
    assert last_error(hostile) == "ERROR boom evil"


def test_exits_are_described_by_signal_or_code() -> None:
    assert describe_exit(None, "SIGKILL") == "killed by SIGKILL"
    assert describe_exit(3, None) == "exit 3"
    assert describe_exit(None, None) is None


def _step_until(
    supervisor: Supervisor, home: Path, done: Callable[[list[ChildStatus]], bool]
) -> list[ChildStatus]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        supervisor.step()
        children = read_state(home)[1]
        if done(children):
            return children
        time.sleep(0.05)
    raise AssertionError(f"the supervisor did not get there: {read_state(home)}")


def test_the_supervisor_starts_a_crashing_child_again_and_reports_why(tmp_path: Path) -> None:
    crash = "print('Traceback (most recent call last):\\n  File x\\nValueError: boom'); exit(3)"
    spec = ChildSpec("crash", [sys.executable, "-c", crash], str(tmp_path / "crash.log"))
    write_spec(tmp_path, [spec], stop_timeout_s=5)
    supervisor = Supervisor(tmp_path, backoff=lambda: Backoff(initial_s=0.05, max_s=0.05))

    [child] = _step_until(supervisor, tmp_path, lambda cs: bool(cs) and cs[0].restarts >= 2)
    assert child.last_exit_code == 3 and child.last_exit_signal is None
    assert child.last_error == "ValueError: boom"
    assert child.exits >= 2

    write_spec(tmp_path, [], stop_timeout_s=5)
    assert _step_until(supervisor, tmp_path, lambda cs: cs == []) == []


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('ready', flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    write_spec(tmp_path, [ChildSpec("stubborn", [sys.executable, "-c", stubborn], str(log))], 0.5)
    supervisor = Supervisor(tmp_path)
    [child] = _step_until(supervisor, tmp_path, lambda cs: bool(cs) and "ready" in log.read_text())
    assert child.alive() and child.restarts == 0

    write_spec(tmp_path, [], stop_timeout_s=0.5)
    began = time.monotonic()
    supervisor.step()
    assert 0.5 <= time.monotonic() - began < 5
    assert read_state(tmp_path)[1] == [] and not child.alive()
