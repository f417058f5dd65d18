"""The README's Python examples run as written: every ```python block, in order, in one namespace, in a
fresh folder. The one thing changed is the addresses of the servers they name: the OpenAI-compatible
model server is a scripted stand-in on 127.0.0.1 here (no model server can be started in a test), and
`tfgrpo serve` is the real proxy in front of it."""

import json
import re
from pathlib import Path

import pytest

from support.llm import StandIn, UvicornThread, chat_reply
from tfgrpo.server.proxy import create_proxy_app

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SERVER = "http://127.0.0.1:8000/v1"
PROXY = "http://127.0.0.1:8080/v1"


async def model(index, path, body):
    """Answers arithmetic like a policy that is right half the time, and writes one lesson as a critic."""
    text = body["messages"][-1]["content"]
    n = body.get("n", 1)
    if text.startswith("You are analysing"):
        return chat_reply(["It added the numbers."] * n)
    if text.startswith(("You study attempts", "You maintain")):
        return chat_reply([json.dumps([{"operation": "add", "text": "Give only the final number."}])] * n)
    numbers = [int(x) for x in re.findall(r"\d+", text.rsplit("Q:", 1)[-1])]
    right = str(sum(numbers[:2])) if len(numbers) >= 2 else "0"
    return chat_reply([right if i % 2 == 0 else "I think it is 7" for i in range(n)])


def blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_examples():
    assert len(blocks()) >= 3


class Counting:
    """An ASGI app that counts the POSTs to each path before `app` answers them."""

    def __init__(self, app) -> None:
        self.app = app
        self.posts: dict[str, int] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.posts[scope["path"]] = self.posts.get(scope["path"], 0) + 1
        await self.app(scope, receive, send)


@pytest.mark.slow
def test_every_python_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with StandIn(model) as server:
        counting = Counting(create_proxy_app(server.url, {"app": tmp_path / "app.db"}))
        with UvicornThread(counting) as proxy:
            for number, code in enumerate(blocks(), 1):
                code = code.replace(SERVER, server.url).replace(PROXY, f"{proxy.url}/v1")
                try:
                    exec(compile(code, f"README.md python block {number}", "exec"), namespace)
                except Exception as exc:  # noqa: BLE001 - name the block that failed
                    pytest.fail(f"README python block {number} failed: {exc!r}\n{code}")
            # The README's feedback client sends a conflicting reward once: one 409, not three.
            openai = pytest.importorskip("openai")
            before = counting.posts.get("/v1/feedback", 0)
            conflicting = {"id": namespace["response"].id, "rewards": [1 - r for r in namespace["rewards"]]}
            with pytest.raises(openai.ConflictError):
                namespace["feedback"].post("/feedback", body=conflicting, cast_to=dict)
            assert counting.posts["/v1/feedback"] == before + 1
    assert (tmp_path / "experiences.json").exists() and (tmp_path / "library.db").exists()
