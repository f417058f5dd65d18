"""The exported data trains with TRL: a short training run on the bundled model logs its rollouts, the export
writes SFT and DPO rows, and TRL's SFTTrainer and DPOTrainer (CPU, the bundled model loaded from its GGUF
by transformers) read them and take a few steps: the loss is finite and changes."""

from __future__ import annotations

import copy
import math

import pytest

from tfgrpo import TrainingFreeGRPO, export_dataset
from tfgrpo.learn import ExampleUpdate
from tfgrpo.learn.rollout_log import RolloutLog
from tfgrpo.llm.local import load_trainable
from tfgrpo.loop import TrainConfig, train
from tfgrpo.tasks import get_task

pytestmark = [
    pytest.mark.model,
    pytest.mark.slow,
    # transformers' own deprecations, raised inside TRL's trainers: not ours to fix.
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def exported(local_backend, tmp_path_factory):
    """SFT and DPO files exported from a library trained two steps on arithmetic (as test_train_model's)."""
    out = tmp_path_factory.mktemp("trl")
    path = str(out / "lib.db")
    task = get_task("arithmetic", n=40, seed=5)
    samples = task.load("train")
    with TrainingFreeGRPO.open(path, seed=0) as grpo, RolloutLog(path) as log:
        for solved in samples[4:6]:  # two solved questions show the tiny model the answer format
            grpo.add_rollout_group([(solved["prompt"], f" {solved['answer']}"), (solved["prompt"], " 0")], [1.0, 0.0])
        config = TrainConfig(batch_size=2, group_size=4, seed=0, chat=False, stop=("\n",), max_tokens=6, shots=2)
        train(local_backend, samples[:4], task.reward, [ExampleUpdate(grpo, "arithmetic")], config, rollout_log=log)
    files = {}
    for format in ("sft", "dpo"):
        files[format] = out / f"{format}.jsonl"
        assert export_dataset(path, format, files[format]) > 0
    return files


def losses(trainer) -> list[float]:
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def arguments(kind, tmp_path, **extra):
    return kind(
        output_dir=str(tmp_path / kind.__name__),
        max_steps=3,
        per_device_train_batch_size=2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        max_length=128,
        seed=0,
        **extra,
    )


def check(values: list[float]) -> None:
    assert len(values) == 3 and all(math.isfinite(v) for v in values)
    assert len(set(values)) > 1  # it trained: the loss moved


def test_sft_trainer_takes_steps_on_the_exported_experiences(exported, tmp_path):
    rows = datasets.load_dataset("json", data_files=str(exported["sft"]), split="train", cache_dir=str(tmp_path))
    model, tokenizer = load_trainable()
    trainer = trl.SFTTrainer(
        model=model,
        args=arguments(trl.SFTConfig, tmp_path, learning_rate=5e-5),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    check(losses(trainer))


def test_dpo_trainer_takes_steps_on_the_exported_pairs(exported, tmp_path):
    rows = datasets.load_dataset("json", data_files=str(exported["dpo"]), split="train", cache_dir=str(tmp_path))
    model, tokenizer = load_trainable()
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=arguments(trl.DPOConfig, tmp_path, learning_rate=5e-5),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    check(losses(trainer))
