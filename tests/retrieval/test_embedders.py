"""Embedders other than the default: an OpenAI-compatible endpoint (over real HTTP on 127.0.0.1, answered
with MiniLM vectors) and a user-supplied object; and the retriever's bookkeeping over many deletions."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tfgrpo import TrainingFreeGRPO
from tfgrpo.errors import TFGRPOError
from tfgrpo.retrieval import OpenAIEmbedder, Retriever, make_embedder


@pytest.fixture
def embeddings_server(minilm):
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append((self.path, body))
            texts = body["input"]
            vectors = minilm.embed(texts)
            data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
            payload = json.dumps(
                {
                    "object": "list",
                    "data": data[::-1],
                    "model": body["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    server.shutdown()
    server.server_close()


def test_openai_compatible_endpoint(embeddings_server, minilm):
    pytest.importorskip("openai")
    base_url, requests = embeddings_server
    embedder = OpenAIEmbedder("minilm", base_url=base_url, api_key="test", batch_size=2)
    vectors = embedder.embed(["Read file lines", "Reverse a string", "Write file atomically"])
    assert np.allclose(
        vectors, minilm.embed(["Read file lines", "Reverse a string", "Write file atomically"]), atol=1e-5
    )
    assert [len(body["input"]) for _, body in requests] == [2, 1]  # batched
    assert all(path == "/v1/embeddings" for path, _ in requests)

    grpo = TrainingFreeGRPO()
    for prompt in ["Read file lines", "Reverse a string", "Write file atomically"]:
        grpo.add_rollout_group([(prompt, "a"), (prompt, "b")], [1.0, 0.0])
    grpo.enable_retrieval(f"openai:minilm@{base_url}")
    assert grpo.retriever.embedder.name == f"openai:{base_url}:minilm"
    assert grpo.get_experiences_for_prompt("Read file", k=1, mode="semantic")[0].prompt == "Read file lines"


def test_unreachable_endpoint_raises_tfgrpo_error():
    pytest.importorskip("openai")
    from openai import OpenAI

    client = OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0, timeout=2)
    with pytest.raises(TFGRPOError, match="embeddings request"):
        OpenAIEmbedder("m", base_url="http://127.0.0.1:9/v1", client=client).embed(["x"])


def test_bad_embedder_and_model():
    with pytest.raises(TFGRPOError, match="embedder must be"):
        make_embedder(42)
    grpo = TrainingFreeGRPO()
    grpo.add_rollout_group([("p", "a"), ("p", "b")], [1.0, 0.0])
    grpo.enable_retrieval("/no/such/model/dir")
    with pytest.raises(TFGRPOError, match="cannot load embedding model"):
        grpo.get_experiences_for_prompt("p", mode="semantic")
    assert grpo.get_experiences_for_prompt("p", mode="lexical")  # lexical needs no model


class LetterCounts:
    """A user-supplied embedder: letter frequencies (any object with name and embed works)."""

    name = "letters"

    def embed(self, texts):
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for i, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out + 1e-3


def test_many_deletions_compact_the_indexes():
    grpo = TrainingFreeGRPO(retriever=Retriever(LetterCounts()))
    prompts = [f"task {i} {'read file' if i % 2 else 'sort list'} variant {i * 7919 % 1000}" for i in range(9000)]
    grpo.add_rollout_groups([([(p, "a"), (p, "b")], [1.0, 0.0], None) for p in prompts])
    assert grpo.get_experiences_for_prompt("read file", k=1, mode="hybrid")
    for exp in list(grpo.experience_library)[:8000]:
        grpo.remove(exp)  # 8000 of 9000 prompts leave: the retriever renumbers its rows
    assert len(grpo.retriever) == 1000 == grpo.library_size()
    live = {id(e) for e in grpo.experience_library}
    for mode in ("lexical", "semantic", "hybrid"):
        found = grpo.get_experiences_for_prompt("read file", k=20, mode=mode)
        assert len(found) == 20 and all(id(e) in live for e in found)
    lexical = grpo.get_experiences_for_prompt("read file", mode="lexical")
    assert {e.prompt for e in lexical} == {e.prompt for e in grpo.experience_library if "read file" in e.prompt}
    # Vectors survived the renumbering: scores are the cosines of the embedder's own vectors.
    query = LetterCounts().embed(["read file"])[0]
    for exp, score in grpo.get_experiences_for_prompt("read file", k=5, mode="semantic", with_scores=True):
        v = LetterCounts().embed([exp.prompt])[0]
        assert score == pytest.approx(float(v @ query / np.linalg.norm(v) / np.linalg.norm(query)), abs=1e-5)


class FailsOnce:
    """Wraps the real model; its first call fails (as a remote endpoint may)."""

    def __init__(self, inner):
        self.inner, self.name, self.failed = inner, inner.name, False

    def embed(self, texts):
        if not self.failed:
            self.failed = True
            raise TFGRPOError("embeddings request failed: 503")
        return self.inner.embed(texts)


def test_failed_embedding_is_retried_on_the_next_query(minilm):
    grpo = TrainingFreeGRPO(retriever=Retriever(FailsOnce(minilm)))
    for prompt in ["Read file lines", "Reverse a string"]:
        grpo.add_rollout_group([(prompt, "a"), (prompt, "b")], [1.0, 0.0])
    with pytest.raises(TFGRPOError, match="503"):
        grpo.get_experiences_for_prompt("Read file", mode="semantic")
    found = grpo.get_experiences_for_prompt("Read file", mode="semantic")
    assert [e.prompt for e in found] == ["Read file lines", "Reverse a string"]
