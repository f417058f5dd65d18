"""`tfgrpo repeat`: one library per training seed, each evaluated, and the lift over the strongest
baseline summarised across the seeds (mean, t 95% CI, spread): run-to-run noise seen, not hidden."""

from __future__ import annotations

import json
import shlex
from pathlib import Path


def add_commands(command) -> None:
    p = command(
        "repeat",
        cmd_repeat,
        "Train one library per training seed (`tfgrpo train`) and evaluate each (`tfgrpo eval --out`), then "
        "report the lift over the strongest baseline across the seeds: mean, t 95%% CI and spread.",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--out", default="repeat-out", help="folder for the libraries and results")
    p.add_argument("--train-args", default="", help='arguments for `tfgrpo train`, e.g. "--task arithmetic -G 8"')
    p.add_argument(
        "--eval-args", default="", help='arguments for `tfgrpo eval`, e.g. "--task arithmetic --baselines -k 4"'
    )


def cmd_repeat(args) -> int | None:
    from ..core.formats import atomic_write
    from ..errors import TFGRPOError
    from ..loop.evaluate import across_training_seeds, repeat_table
    from . import main

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        library, result = out / f"library-seed{seed}.db", out / f"eval-seed{seed}.json"
        train = [*shlex.split(args.train_args), "--library", str(library), "--seed", str(seed)]
        evaluate = [*shlex.split(args.eval_args), "--library", str(library), "--out", str(result)]
        for argv in (["train", *train], ["eval", *evaluate]):
            if main(argv) not in (0, None):
                raise TFGRPOError(f"tfgrpo {' '.join(argv)} failed (seed {seed}); see above")
        results.append({**json.loads(result.read_text()), "train_seed": seed})
    summary = across_training_seeds(results)
    atomic_write(out / "repeat.json", lambda f: json.dump(summary, f, indent=1))
    print(repeat_table(summary))
    print(f"results: {out / 'repeat.json'} (tfgrpo report --eval reads it)")
    return None
