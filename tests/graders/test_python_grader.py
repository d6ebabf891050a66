"""Python graders in their sandbox: rewards, and the walls (time, CPU, memory, network,
processes, the hidden data folder). Each call starts a process (about 0.1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.graders.test_run import grade
from tuneforge.graders.sandbox import PythonLimits, run_python

LIMITS = PythonLimits(seconds=10, cpu_seconds=1, memory_mb=512)


def one(
    source: str, limits: PythonLimits = LIMITS, sample: dict | None = None, item: object = None
):
    [outcome] = run_python(source, [(sample or {"output_text": "x"}, item or {})], limits)
    return outcome


def test_grade_gets_the_sample_and_the_item() -> None:
    source = (
        "import json, math\n"
        "def grade(sample, item):\n"
        "    answer = sample['output_json']['answer']\n"
        "    return 1.0 - min(1.0, abs(answer - item['expected']) / item['expected'])\n"
    )
    grader = {"type": "python", "name": "numeric", "source": source}
    result = grade(grader, '{"answer": 40}', {"expected": 50}, python_limits=LIMITS)
    assert result.reward == pytest.approx(0.8)
    assert not any(result.errors.values())


def test_several_samples_in_one_process() -> None:
    outcomes = run_python(
        "def grade(sample, item):\n    return len(sample['output_text']) / item['n']\n",
        [({"output_text": "ab"}, {"n": 4}), ({"output_text": "abcd"}, {"n": 4})],
        LIMITS,
    )
    assert [o.reward for o in outcomes] == [0.5, 1.0]


def test_an_infinite_loop_is_stopped_by_the_cpu_limit() -> None:
    outcome = one("def grade(sample, item):\n    while True:\n        pass\n")
    assert outcome.reward is None and outcome.timed_out
    assert "more than 1 s of CPU time" in (outcome.error or "")


def test_a_sleeping_grader_is_stopped_by_the_wall_clock() -> None:
    limits = PythonLimits(seconds=1, cpu_seconds=5, memory_mb=512)
    outcome = one("import time\ndef grade(sample, item):\n    time.sleep(30)\n", limits)
    assert outcome.timed_out and "did not finish within 1 s" in (outcome.error or "")
    grader = {
        "type": "python",
        "name": "slow",
        "source": "import time\ndef grade(sample, item):\n    time.sleep(30)\n",
    }
    result = grade(grader, "x", python_limits=limits)
    assert result.reward == 0.0
    assert result.errors["python_grader_runtime_error"]
    assert result.errors["unresponsive_reward_error"]
    assert "did not finish" in result.errors["python_grader_runtime_error_details"]


def test_a_memory_bomb_fails() -> None:
    outcome = one("def grade(sample, item):\n    block = bytearray(2 ** 31)\n    return 1\n")
    assert outcome.reward is None and outcome.error == "MemoryError"


def test_the_network_is_out_of_reach() -> None:
    outcome = one(
        "import socket\n"
        "def grade(sample, item):\n"
        "    socket.create_connection(('127.0.0.1', 80), timeout=1)\n"
        "    return 1\n"
    )
    assert outcome.error is not None and "may not do this: socket" in outcome.error
    # Beneath the audit hook: a network namespace whose only interface is a loopback.
    outcome = one(
        "def grade(sample, item):\n"
        "    lines = open('/proc/net/dev').read().splitlines()[2:]\n"
        "    return len(lines) * 10 + ('lo:' in lines[0])\n"
    )
    assert outcome.reward == 11.0


def test_processes_and_ctypes_are_refused() -> None:
    for source, says in [
        ("import os\ndef grade(s, i):\n    os.kill(os.getppid(), 9)\n", "os.kill"),
        ("import subprocess\ndef grade(s, i):\n    return 1\n", "_posixsubprocess is not"),
        ("import os\ndef grade(s, i):\n    os.system('true')\n", "os.system"),
        ("import ctypes\ndef grade(s, i):\n    return 1\n", "ctypes is not available"),
    ]:
        outcome = one(source)
        assert outcome.error is not None and says in outcome.error, source
    # Its processes are alone in their PID namespace: tuneforge's are not even visible.
    outcome = one(
        "import os\ndef grade(s, i):\n    return len([p for p in os.listdir('/proc') "
        "if p.isdigit()])\n"
    )
    assert outcome.reward is not None and outcome.reward <= 2


def test_the_data_folder_is_hidden(tmp_path: Path) -> None:
    data = tmp_path / "tuneforge-data"
    data.mkdir()
    (data / "tuneforge.db").write_text("secret")
    limits = PythonLimits(seconds=10, cpu_seconds=2, memory_mb=512, hidden=(data,))
    outcome = one(
        f"import os\ndef grade(s, i):\n    return len(os.listdir({str(data)!r}))\n", limits
    )
    assert outcome.reward == 0.0
    outcome = one(f"def grade(s, i):\n    open({str(data / 'x')!r}, 'w')\n", limits)
    assert outcome.error is not None and "Read-only file system" in outcome.error


def test_only_its_working_folder_is_writable_and_it_has_no_capabilities(tmp_path: Path) -> None:
    outcome = one(f"def grade(s, i):\n    open({str(tmp_path / 'x')!r}, 'w')\n")
    assert outcome.error is not None and "Read-only file system" in outcome.error
    assert not (tmp_path / "x").exists()
    outcome = one("def grade(s, i):\n    return open('scratch', 'w').write('ok')\n")
    assert outcome.reward == 2.0
    outcome = one(
        "def grade(s, i):\n"
        "    status = open('/proc/self/status').read()\n"
        "    return int(status.split('CapEff:')[1].split()[0], 16)\n"
    )
    assert outcome.reward == 0.0


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("def grade(s, i):\n    return 'high'\n", "returned str, not a number"),
        ("def grade(s, i):\n    return float('nan')\n", "returned nan"),
        ("def grade(s, i):\n    raise ValueError('no answer')\n", "ValueError: no answer"),
        ("raise SystemExit(3)\ndef grade(s, i):\n    return 1\n", "SystemExit: 3"),
    ],
)
def test_grader_errors_are_reported(source: str, says: str) -> None:
    grader = {"type": "python", "name": "p", "source": source}
    result = grade(grader, "x", python_limits=LIMITS)
    assert result.reward == 0.0 and result.errors["python_grader_runtime_error"]
    assert says in result.errors["python_grader_runtime_error_details"]
