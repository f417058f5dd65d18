"""A PostgreSQL URL's password is a secret: no message, result file, tracker run or server banner shows it
(`core.store.shown_target`). The test server trusts every local login, so the password is given and
ignored, as a real one would be taken."""

from __future__ import annotations

import re
import subprocess

import pytest

from support.cli import TFGRPO, tfgrpo
from support.llm import StandIn, chat_reply, free_port
from tfgrpo.core.store import shown_target

SECRET = "hunter2-secret"


async def half_right(index, path, body):
    text = body["messages"][-1]["content"]
    asked = re.findall(r"What is ([\d\s+*-]+)\?", text)
    right = str(eval(asked[-1], {})) if asked else "0"  # the task's own expressions: digits and + - *
    return chat_reply([right if i % 2 == 0 else "7" for i in range(body.get("n", 1))])


def test_the_url_is_shown_without_its_password():
    assert shown_target(f"postgresql://me:{SECRET}@db:5432/lib?schema=t0&sslmode=require") == (
        "postgresql://me@db:5432/lib?schema=t0"
    )
    assert shown_target("library.db") == "library.db"


@pytest.mark.slow
def test_no_output_or_file_shows_the_password(postgres_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (a PostgreSQL library's metrics log is written in the current folder)
    url = postgres_server.new_url()
    library = url.replace("postgresql://tfgrpo@", f"postgresql://tfgrpo:{SECRET}@")
    assert SECRET in library
    tiny = ["--task", "arithmetic", "--task-option", "n=40", "--limit", "4"]
    with StandIn(half_right) as server:
        model = ["--model", f"openai:m@{server.url}"]
        ran = [
            tfgrpo("train", *tiny, *model, "-G", "4", "--batch-size", "2", "-l", library,
                   "--track", "tensorboard", "--track-dir", tmp_path / "runs"),
            tfgrpo("eval", *tiny, *model, "-l", library, "--no-baselines", "--out", tmp_path / "eval.json"),
            tfgrpo("train", *tiny, *model, "-G", "4", "--batch-size", "2", "-l", library),  # "resuming ..."
            tfgrpo("stats", "-l", library),
            tfgrpo("query", "-l", library, "nothing like it"),
            tfgrpo("export", "-l", library, "--format", "sft", tmp_path / "sft.jsonl"),
            tfgrpo("report", "-l", library, "--eval", tmp_path / "eval.json", "-o", tmp_path / "report.html"),
        ]  # fmt: skip
    missing = url.replace("?schema=", "?schema=none_here_") if "?schema=" in url else url + "?schema=none_here"
    ran.append(tfgrpo("stats", "-l", missing.replace("tfgrpo@", f"tfgrpo:{SECRET}@"), check=False))
    assert ran[-1].returncode == 1
    for result in ran:
        assert SECRET not in result.stdout + result.stderr, result.args
    written = subprocess.run(["grep", "-rl", SECRET, str(tmp_path)], capture_output=True, text=True).stdout
    assert written == "", written
    # The server says where it serves as it starts: the URL without the password.
    serve = subprocess.Popen(
        [TFGRPO, "serve", "-l", library, "--upstream", "http://127.0.0.1:9/v1", "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        banner = serve.stdout.readline()  # printed (and flushed) before it listens
    finally:
        serve.terminate()
        rest, _ = serve.communicate(timeout=60)
    assert banner.startswith("tfgrpo serve: postgresql://tfgrpo@") and SECRET not in banner + rest
