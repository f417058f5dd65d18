"""Fair evaluation against a scripted OpenAI-compatible stand-in on 127.0.0.1: baselines (zero-shot chat
and text, the stop rule, labelled and bootstrapped few-shot) beside a library, evaluation seeds, Holm's
correction, and the full result as JSON."""

import json
import re

import numpy as np
import pytest

from support.llm import StandIn, chat_reply
from tfgrpo.core.library import TrainingFreeGRPO
from tfgrpo.learn.rollouts import RolloutConfig, cut_after_content
from tfgrpo.llm.base import Generation
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import EvalConfig, evaluate
from tfgrpo.loop.evaluate import Baseline, fair_baselines, holm, labelled_examples, sign_flip_p_value
from tfgrpo.prompting import PromptTemplate
from tfgrpo.rewards.base import FunctionReward, Score

QUESTION = re.compile(r"What is (\d+)\+(\d+)\?")
TRAIN = [{"id": f"t{a}", "prompt": f"What is {a}+{a + 2}?", "answer": str(2 * a + 2)} for a in range(1, 9)]
TEST = [{"id": f"e{a}", "prompt": f"What is {a}+{a + 1}?", "answer": str(2 * a + 1)} for a in range(20, 28)]
SHARED = {"template": PromptTemplate(instruction="Reply with one number."), "stop": ("\n",), "batch_size": 4}


async def policy(index, path, body):
    """Text mode: the right number after a leading newline (a stop of "\\n" cuts it to nothing). Chat mode:
    right on every sample when the prompt holds an answered example ("A: <number>"), right on every
    other sample without one; the learned library's examples carry the marker "Answer:"."""
    chat = "messages" in body
    text = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
    a, b = map(int, QUESTION.findall(text)[-1])
    n = body.get("n", 1)
    if not chat:
        return chat_reply([f"\n{a + b}" for _ in range(n)], chat=False)
    if "Answer:" in text:
        return chat_reply([str(a + b) for _ in range(n)])
    shots = re.search(r"A: \d+", text) is not None
    return chat_reply([str(a + b + (0 if shots or i % 2 == 0 else 1)) for i in range(n)])


def exact(prompt, response, sample):
    return Score(float(response.strip() == sample["answer"]))


def test_the_stop_rule_keeps_an_answer_that_starts_with_a_newline():
    config = RolloutConfig(stop=("\n", "Q:"), stop_after_content=True)
    assert cut_after_content(Generation("\n\n 42\nQ: next"), config).text == "42"
    assert cut_after_content(Generation("  7 Q: more"), config).text == "7 "
    assert cut_after_content(Generation("\n"), config).text == ""
    unchanged = Generation("\n42")
    assert cut_after_content(unchanged, RolloutConfig(stop=("\n",))) is unchanged


def test_holm_and_the_sign_flip_test():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert sign_flip_p_value(np.zeros(10)) == 1.0
    assert sign_flip_p_value(np.full(12, 0.5), resamples=2000) < 0.01  # 2^-11 of sign patterns are as extreme
    assert sign_flip_p_value(np.array([1.0, -1.0] * 10), resamples=2000) == 1.0


def test_labelled_examples_take_reference_answers_in_order():
    assert labelled_examples(TRAIN, 2) == (("What is 1+3?", "4"), ("What is 2+4?", "6"))
    assert labelled_examples([{"prompt": "x"}], 3) == ()


def test_a_library_is_compared_with_the_strongest_baseline_over_seeds(tmp_path):
    with (
        StandIn(policy) as stand_in,
        OpenAIBackend(base_url=stand_in.url, model="scripted", max_retries=0, timeout=10) as llm,
    ):
        config = EvalConfig(k=2, seeds=(0, 1), **SHARED)
        reward = FunctionReward(exact)
        baselines = fair_baselines(llm, TRAIN, reward, config, shots=2)
        assert list(baselines) == [
            "zero-shot chat",
            "zero-shot chat, stop after content",
            "zero-shot text",
            "zero-shot text, stop after content",
            "labelled 2-shot",
            "bootstrapped 2-shot",
        ]
        assert baselines["labelled 2-shot"].examples == (("What is 1+3?", "4"), ("What is 2+4?", "6"))
        # Bootstrapped from the first training prompts whose zero-shot rollouts succeeded.
        assert baselines["bootstrapped 2-shot"].examples == (("What is 1+3?", "4"), ("What is 2+4?", "6"))
        library = TrainingFreeGRPO(seed=0)
        for sample in TRAIN[:3]:
            library.add_rollout_group(
                [(sample["prompt"], f"Answer: {sample['answer']}"), (sample["prompt"], "0")], [1.0, 0.0]
            )
        report = evaluate(llm, TEST, reward, {**baselines, "library": library}, config)
        seeds_sent = {body["seed"] for body in stand_in.bodies if "seed" in body}

    by_name = {c.name: c for c in report.conditions}
    assert by_name["zero-shot text"].mean_at_k == 0.0  # cut at its leading newline
    assert by_name["zero-shot text, stop after content"].mean_at_k == 1.0
    assert by_name["zero-shot chat"].mean_at_k == 0.5
    assert by_name["labelled 2-shot"].mean_at_k == 1.0
    assert by_name["library"].mean_at_k == 1.0
    assert all(c.rewards.shape == (2, len(TEST), 2) for c in report.conditions)
    assert len(report.seeds) == 2 and len(seeds_sent) >= 4  # two evaluation seeds x two batches
    # The library is measured against the strongest baseline, not the weakest.
    assert report.strongest_baseline == "zero-shot text, stop after content"
    (comparison,) = report.comparisons
    assert (comparison.name, comparison.baseline, comparison.mean_diff) == ("library", report.strongest_baseline, 0.0)
    assert comparison.p_value == comparison.p_holm == 1.0
    table = report.table()
    assert "(strongest baseline)" in table and "2 evaluation seeds" in table and "Holm" in table

    out = tmp_path / "eval.json"
    out.write_text(json.dumps(report.to_dict()))
    saved = json.loads(out.read_text())
    assert saved["strongest_baseline"] == "zero-shot text, stop after content" and saved["correction"] == "holm"
    assert saved["prompt_ids"] == [s["id"] for s in TEST] and saved["seeds"] == report.seeds
    assert saved["settings"]["k"] == 2 and saved["settings"]["template"]["instruction"] == "Reply with one number."
    chat = saved["conditions"]["zero-shot chat"]
    assert np.asarray(chat["rewards"]).shape == (2, len(TEST), 2) and chat["per_prompt"] == [0.5] * len(TEST)
    assert chat["description"]["chat"] is True and chat["baseline"] is True
    assert saved["conditions"]["library"]["baseline"] is False


def test_several_library_conditions_are_holm_corrected():
    with (
        StandIn(policy) as stand_in,
        OpenAIBackend(base_url=stand_in.url, model="scripted", max_retries=0, timeout=10) as llm,
    ):
        config = EvalConfig(k=2, chat=True, **SHARED)
        good = TrainingFreeGRPO(seed=0)
        good.add_rollout_group([(TRAIN[0]["prompt"], "Answer: 4"), (TRAIN[0]["prompt"], "0")], [1.0, 0.0])
        conditions = {"baseline": Baseline(), "good": good, "empty": TrainingFreeGRPO(seed=0)}
        report = evaluate(llm, TEST, FunctionReward(exact), conditions, config)
    good_cmp, empty_cmp = report.comparisons
    assert good_cmp.mean_diff == 0.5 and empty_cmp.mean_diff == 0.0
    assert good_cmp.p_value < 0.05 and good_cmp.p_holm == pytest.approx(min(1.0, 2 * good_cmp.p_value))
    assert empty_cmp.p_holm == 1.0
    assert "Holm-corrected over 2 comparisons" in report.table()
