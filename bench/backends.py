"""The local model on CPU: transformers (the project's local backend) against llama.cpp
(llama-cpp-python), on the same bundled GGUF file, prompts and sampling settings: load time and
generation throughput for groups of G completions.

    pip install llama-cpp-python     # an sdist: compiles llama.cpp (about 5 minutes on 2 cores)
    python bench/backends.py                      # 4 prompts x G=8, 64 new tokens, 2 threads
    python bench/backends.py --threads 1 --group 4

transformers samples a group in one batched `generate`; llama-cpp-python's API completes one sequence
per call, so its group is G calls in a row (the prompt's evaluation is reused from its cache).
"""

from __future__ import annotations

import argparse
import time

from tfgrpo.llm import GenerationParams
from tfgrpo.llm.local import TransformersBackend, bundled_model_path

TOPICS = ["a lighthouse keeper", "a lost key", "the first snow", "a robot learning to paint", "a night train"]


def prompts(count: int) -> list[list[dict]]:
    """Chat prompts that make the model write past `max_tokens`, so both backends generate about as
    many tokens (tokens/s is computed from what each actually generated)."""
    return [
        [{"role": "user", "content": f"Write a long story of about 300 words about {TOPICS[i % len(TOPICS)]}."}]
        for i in range(count)
    ]


def bench_transformers(texts: list, group: int, max_tokens: int, threads: int) -> dict:
    started = time.perf_counter()
    backend = TransformersBackend(chat=True, num_threads=threads)
    load = time.perf_counter() - started
    params = GenerationParams(n=group, temperature=0.7, max_tokens=max_tokens, seed=1)
    backend.generate(texts[:1], params.replace(n=1, max_tokens=4))  # warm-up
    before = backend.usage.snapshot()
    started = time.perf_counter()
    for text in texts:
        backend.generate([text], params)
    seconds = time.perf_counter() - started
    tokens = (backend.usage.snapshot() - before).completion_tokens
    backend.close()
    return {"load_s": load, "tokens": tokens, "seconds": seconds}


def bench_llama_cpp(texts: list, group: int, max_tokens: int, threads: int) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    started = time.perf_counter()
    llm = Llama(model_path=str(bundled_model_path()), n_ctx=2048, n_threads=threads, seed=1, verbose=False)
    load = time.perf_counter() - started
    llm.create_chat_completion(texts[0], max_tokens=4, temperature=0.7, seed=0)  # warm-up
    tokens = 0
    started = time.perf_counter()
    for messages in texts:
        for i in range(group):
            out = llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=0.7, seed=1 + i)
            tokens += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - started
    return {"load_s": load, "tokens": tokens, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = prompts(args.prompts)
    settings = (texts, args.group, args.max_tokens, args.threads)
    results = {"transformers": bench_transformers(*settings), "llama.cpp": bench_llama_cpp(*settings)}

    base = results["transformers"]
    base_rate = base["tokens"] / base["seconds"]
    print(
        f"{args.prompts} chat prompts x G={args.group}, up to {args.max_tokens} new tokens, temperature 0.7, "
        f"{args.threads} threads, {bundled_model_path().name}"
    )
    print(f"{'backend':<14} {'load s':>8} {'tokens':>8} {'seconds':>9} {'tokens/s':>9} {'vs transformers':>16}")
    for name, r in results.items():
        if r is None:
            print(f"{name:<14} not installed (pip install llama-cpp-python)")
            continue
        rate = r["tokens"] / r["seconds"]
        print(
            f"{name:<14} {r['load_s']:>8.1f} {r['tokens']:>8} {r['seconds']:>9.1f} {rate:>9.1f} "
            f"{rate / base_rate:>15.2f}x"
        )


if __name__ == "__main__":
    main()
