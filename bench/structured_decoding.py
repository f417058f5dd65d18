"""What the JSON-schema constraint (`tfgrpo.llm.structured`) costs per decoding step on the bundled
model's tokenizer (49,152 tokens), without the model: the processor is fed the tokens of real
operation answers, as `generate` would feed it, and timed per step. The baseline, measured in the same
run, is the naive way: checking every token of the vocabulary against the grammar at each step.

    .venv/bin/python bench/structured_decoding.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

ANSWERS = [
    '{"operations": [{"operation": "add", "text": "Add the ones digits first, then carry the ten to the tens."}]}',
    '{"operations": [{"operation": "update", "id": "G0", "text": "Write only the final number."}, '
    '{"operation": "none"}]}',
    '{"operations": [\n  {"operation": "delete", "id": "G0"},\n  {"operation": "add", "text": "Check the sum."}\n]}',
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-steps", type=int, default=5, help="steps timed for the naive baseline")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoTokenizer

    from tfgrpo.llm.local import split_model_path
    from tfgrpo.llm.structured import TokenTable
    from tfgrpo.semantic.operations import KINDS, operations_schema

    source, gguf = split_model_path(None, None)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
    started = time.perf_counter()
    table = TokenTable(tokenizer, [tokenizer.eos_token_id])
    table_s = time.perf_counter() - started
    schema = operations_schema(KINDS, ("G0", "G1"), max_operations=3)
    width = len(tokenizer)

    def run(answer: str) -> list[float]:
        processor = table.constraint(schema, 160)
        ids = torch.zeros((1, 10), dtype=torch.long)
        times = []
        for token in [*tokenizer.encode(answer, add_special_tokens=False), tokenizer.eos_token_id]:
            scores = torch.zeros((1, width))
            t0 = time.perf_counter()
            out = processor(ids, scores)
            times.append(time.perf_counter() - t0)
            assert out[0, token] > float("-inf"), f"the constraint blocked {tokenizer.decode([token])!r}"
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        return times

    cold = [t for answer in ANSWERS for t in run(answer)]  # every state met for the first time
    warm = [t for answer in ANSWERS for t in run(answer)]  # the same states again (cached masks)

    grammar = table.masks(schema).grammar
    state = grammar.root
    naive = []
    for token in tokenizer.encode(ANSWERS[0], add_special_tokens=False)[: args.naive_steps]:
        t0 = time.perf_counter()
        empty = grammar.empty
        allowed = [i for i, text in enumerate(table.texts) if text and grammar.advance(state, text) is not empty]
        naive.append(time.perf_counter() - t0)
        assert token in allowed
        state = grammar.advance(state, table.texts[token] or "")

    def ms(values: list[float]) -> str:
        return f"{1000 * statistics.mean(values):8.2f} {1000 * max(values):8.2f}"

    print(f"load average {os.getloadavg()[0]:.2f}; token table built in {table_s:.1f} s ({width} tokens)")
    print(f"{'per step':<34} {'mean ms':>8} {'max ms':>8}  ratio to naive")
    base = statistics.mean(naive)
    for name, values in (("naive (every token, each step)", naive), ("constraint, first time", cold)):
        print(f"{name:<34} {ms(values)}  {statistics.mean(values) / base:.4f}")
    print(f"{'constraint, states seen before':<34} {ms(warm)}  {statistics.mean(warm) / base:.4f}")


if __name__ == "__main__":
    main()
