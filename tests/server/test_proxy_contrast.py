"""`tfgrpo serve --contrast`: a group learned from feedback records its worst choice beside the success, and
the proxy's injection shows it (chat and text completions) only when asked, within the token budget."""

from __future__ import annotations

from support.proxy import Proxy, Q, Upstream, chat
from tfgrpo.core.library import TrainingFreeGRPO
from tfgrpo.learn import with_contrast
from tfgrpo.server.config import ProxyConfig

NEXT = "What is 17 + 26?"


def sent_user_text(upstream: Upstream) -> str:
    return upstream.bodies[-1]["messages"][-1]["content"]


def test_feedback_records_the_contrast_and_the_flag_shows_it(fresh, tmp_path):
    path = tmp_path / "lib.db"
    with Proxy(fresh, path, ProxyConfig(shots=1, contrast=True)) as proxy, proxy.client() as client:
        cid = chat(client, n=3).id
        assert proxy.post("/v1/feedback", {"id": cid, "rewards": [0.0, 1.0, 0.5]}).json()["groups"] == [1]
        (exp,) = proxy.library.experiences.experience_library
        assert exp.response == "ok-1"
        assert (exp.metadata["contrast_response"], exp.metadata["contrast_reward"]) == ("ok-0", "0.0")
        chat(client, NEXT)
        assert sent_user_text(fresh) == f"Q: {Q}\nWrong answer: ok-0\nA: ok-1\n\nQ: {NEXT}\nA:"
        client.completions.create(model="scripted", prompt=NEXT, max_tokens=5)
        assert fresh.bodies[-1]["prompt"] == f"Q: {Q}\nWrong answer: ok-0\nA: ok-1\n\nQ: {NEXT}\nA:"
    # The same library served without the flag: the prompt as before contrast existed.
    with Proxy(fresh, path, ProxyConfig(shots=1)) as proxy, proxy.client() as client:
        chat(client, NEXT)
        assert sent_user_text(fresh) == f"Q: {Q}\nA: ok-1\n\nQ: {NEXT}\nA:"


def test_the_shown_failure_counts_within_the_token_budget(fresh, tmp_path):
    path = tmp_path / "lib.db"
    responses, rewards = ["17 + 25 = 42", "x" * 400], [1.0, 0.0]
    with TrainingFreeGRPO.open(path) as grpo:
        grpo.add_rollout_groups([([(Q, r) for r in responses], rewards, with_contrast(responses, rewards, {}))])
    for contrast, injected in ((False, 1), (True, 0)):
        config = ProxyConfig(shots=1, token_budget=50, contrast=contrast)
        with Proxy(fresh, path, config) as proxy, proxy.client() as client:
            response = chat(client, NEXT)
            assert len(response.model_extra["tfgrpo"]["experiences"]) == injected
            assert ("42" in sent_user_text(fresh)) == bool(injected) and "xxx" not in sent_user_text(fresh)
