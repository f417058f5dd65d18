"""`tfgrpo serve` with real clients and a real model: the official `openai` client (sync, streaming,
async) through the proxy in front of `serve-model` on the bundled model, and LiteLLM (a third-party
client) through the proxy, when it is installed."""

from __future__ import annotations

import asyncio
import os

import pytest

from support.llm import UvicornThread
from support.proxy import Proxy, Upstream, seeded_library
from tfgrpo.server.config import ProxyConfig
from tfgrpo.server.model_server import create_app

openai = pytest.importorskip("openai")


@pytest.mark.model
def test_openai_client_through_the_proxy_in_front_of_serve_model(local_backend, tmp_path):
    seeded_library(tmp_path / "lib.db")
    with UvicornThread(create_app(local_backend, "smol")) as model:
        upstream = Upstream()
        upstream.url = f"{model.url}/v1"
        with Proxy(upstream, tmp_path / "lib.db", ProxyConfig(shots=1)) as proxy, proxy.client() as client:
            question = [{"role": "user", "content": "What is 2 + 4?"}]
            response = client.chat.completions.create(
                model="smol", messages=question, n=2, max_tokens=8, temperature=0.8, seed=1
            )
            info = response.model_extra["tfgrpo"]
            assert response.id.startswith("chatcmpl-tfgrpo-") and response.model == "smol"
            assert info["lessons"] == ["G0", "G1"] and len(info["experiences"]) == 1
            assert len(response.choices) == 2 and all(c.message.content for c in response.choices)
            feedback = proxy.post("/v1/feedback", {"id": response.id, "rewards": [1, 0]}).json()
            assert feedback["groups"] == [1] and proxy.library.experiences.library_size() == 3

            chunks = list(
                client.chat.completions.create(model="smol", messages=question, max_tokens=8, seed=2, stream=True)
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text and {c.id for c in chunks} == {chunks[0].id}
            assert proxy.library.records.get(chunks[0].id)["choices"] == [text]

            async def both() -> list:
                async with openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="none", max_retries=0) as c:
                    return await asyncio.gather(
                        *(
                            c.completions.create(model="smol", prompt=p, max_tokens=4, temperature=0)
                            for p in ("The capital of France is", "1, 2, 3,")
                        )  # fmt: skip
                    )

            answers = asyncio.run(both())
            assert all(a.id.startswith("cmpl-tfgrpo-") and a.choices[0].text for a in answers)


@pytest.mark.slow  # importing litellm takes seconds
def test_litellm_through_the_proxy(tmp_path):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price list
    litellm = pytest.importorskip("litellm")
    upstream = Upstream()
    with UvicornThread(upstream) as running:
        upstream.url = f"{running.url}/v1"
        seeded_library(tmp_path / "lib.db")
        with Proxy(upstream, tmp_path / "lib.db") as proxy:
            response = litellm.completion(
                model="openai/scripted",
                api_base=f"{proxy.url}/v1",
                api_key="none",
                messages=[{"role": "user", "content": "What is 2 + 4?"}],
                n=2,
            )
            assert response.id.startswith("chatcmpl-tfgrpo-")
            assert [c.message.content for c in response.choices] == ["ok-0", "ok-1"]
            assert "[G0]." in upstream.bodies[-1]["messages"][0]["content"]
            assert proxy.post("/v1/feedback", {"id": response.id, "rewards": [0, 1]}).json()["groups"] == [1]
            chunks = list(
                litellm.completion(
                    model="openai/scripted",
                    api_base=f"{proxy.url}/v1",
                    api_key="none",
                    messages=[{"role": "user", "content": "Say ok"}],
                    stream=True,
                )
            )
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "ok-0"
