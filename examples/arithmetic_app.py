"""An app that asks arithmetic questions through `tfgrpo serve` and posts the checker's reward back.

Start the proxy (here in front of the bundled local model, with a tenth of the requests held out):

    tfgrpo serve --upstream local --library arithmetic.db --holdout 0.1 --lessons-every 0

then run this app; it prints the reward per round, with and without the library, and at the end the
lift the proxy measured from the feedback (`GET /v1/libraries/{name}/lift`):

    python examples/arithmetic_app.py --proxy http://127.0.0.1:8080/v1 --rounds 8 --questions 16
"""

from __future__ import annotations

import argparse
import re
import sys

import httpx
from openai import OpenAI

INSTRUCTION = "Answer the arithmetic question. Reply with the final answer as a single number."


def questions(n: int, seed: int) -> list[tuple[str, int]]:
    """`n` distinct "What is a + b?" questions (1..20) with their answers."""
    import random

    rng = random.Random(seed)
    pairs = sorted({(rng.randint(1, 20), rng.randint(1, 20)) for _ in range(20 * n)})
    rng.shuffle(pairs)
    return [(f"What is {a} + {b}?", a + b) for a, b in pairs[:n]]


def checker(reply: str, answer: int) -> float:
    """1.0 when the last number in the reply is the answer."""
    numbers = re.findall(r"-?\d+", reply)
    return float(bool(numbers) and int(numbers[-1]) == answer)


def served_library(response, wanted: str | None) -> str:
    """The name of the library the proxy used, from its answer's `tfgrpo` field; exits saying what is
    wrong when there is none or it is not `wanted`."""
    info = (response.model_extra or {}).get("tfgrpo")
    if not isinstance(info, dict) or "library" not in info:
        sys.exit("the server answered without a tfgrpo field: is --proxy the address of `tfgrpo serve`?")
    if wanted is not None and info["library"] != wanted:
        sys.exit(
            f"the proxy serves the library {info['library']!r}, not {wanted!r} (its name is the library "
            f"file's name without .db): pass --library {info['library']} or leave --library out"
        )
    return info["library"]


def get_json(url: str) -> dict:
    """A GET of the proxy's JSON; exits with the proxy's own error message when it is not a 200."""
    response = httpx.get(url, timeout=30)
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        sys.exit(f"GET {url}: {response.status_code} {message}")
    return response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="http://127.0.0.1:8080/v1")
    parser.add_argument(
        "--library",
        default=None,
        help="the library's name, its file name without .db (default: the one the proxy names in its answers)",
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--questions", type=int, default=16, help="questions per round")
    parser.add_argument("-n", type=int, default=4, help="answers per question (a group for the library)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    client = OpenAI(base_url=args.proxy, api_key="none")
    feedback = client.with_options(max_retries=0)  # a 409 is an answer, not a failure to retry
    pool = questions(args.rounds * args.questions, args.seed)
    print("round | reward (library) | reward (holdout) | experiences")
    for r in range(args.rounds):
        arms: dict[bool, list[float]] = {False: [], True: []}
        for question, answer in pool[r * args.questions : (r + 1) * args.questions]:
            response = client.chat.completions.create(
                model="local",
                messages=[{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": question}],
                n=args.n,
                max_tokens=args.max_tokens,
                temperature=0.7,
                stop=["\n"],
            )
            args.library = served_library(response, args.library)
            rewards = [checker(c.message.content or "", answer) for c in response.choices]
            feedback.post("/feedback", body={"id": response.id, "rewards": rewards}, cast_to=httpx.Response)
            arms[response.model_extra["tfgrpo"]["holdout"]].append(sum(rewards) / len(rewards))
        stats = get_json(f"{args.proxy}/libraries/{args.library}")
        library, holdout = (f"{sum(v) / len(v):.3f} ({len(v)})" if v else "-" for v in (arms[False], arms[True]))
        print(f"{r + 1:5d} | {library:16} | {holdout:16} | {stats['experiences']['current_library_size']}", flush=True)

    lift = get_json(f"{args.proxy}/libraries/{args.library}/lift")
    with_library, without = lift["with_library"], lift["without_library"]
    ci = lift["ci95"]
    print(
        f"lift: {with_library['mean_reward']:.3f} with the library (n={with_library['n']}) vs "
        f"{without['mean_reward'] if without['mean_reward'] is not None else float('nan'):.3f} without "
        f"(n={without['n']}): {lift['lift'] if lift['lift'] is not None else float('nan'):+.3f}, 95% CI "
        + (f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "n/a (too few holdout answers)")
    )


if __name__ == "__main__":
    main()
