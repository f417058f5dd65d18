"""Loading samples from JSONL, CSV or Parquet files, and a seeded train/test split.

Every sample is a dict with the file's own fields plus "id", "prompt" and (unless `answer_field` is
None) "answer", taken from the fields you name.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import ConfigError, DatasetError, DatasetNotFoundError

FORMATS = ("jsonl", "csv", "parquet")


def load_samples(
    path: str | Path,
    *,
    prompt_field: str = "prompt",
    answer_field: str | None = "answer",
    id_field: str | None = "id",
    format: str | None = None,
) -> list[dict]:
    """Samples from a .jsonl (.jsonl.gz), .csv or .parquet file (or `format=` one of `FORMATS`).

    "prompt" and "answer" are copied from `prompt_field` and `answer_field` (every row must have
    them; pass `answer_field=None` for a dataset without answers). "id" comes from `id_field` where a
    row has it, else is "<file stem>-<row number>"; ids must be unique.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"no dataset file at {path}" + (" (it is a directory)" if path.is_dir() else ""))
    format = format or _guess_format(path)
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r} for {path}; use one of {', '.join(FORMATS)}")
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[format]
    stem = path.name.split(".")[0]
    samples: list[dict] = []
    seen: dict[str, str] = {}
    for number, (where, row) in enumerate(reader(path)):
        where = f"{path}, {where}"
        for field in (prompt_field, answer_field):
            if field is not None and row.get(field) is None:
                raise DatasetError(
                    f"{where}: no field {field!r} (fields: {sorted(k for k in row if k is not None)}); "
                    + _field_hint(field, prompt_field)
                )
        if not isinstance(row[prompt_field], str) or not row[prompt_field].strip():
            raise DatasetError(f"{where}: field {prompt_field!r} must be non-empty text, got {row[prompt_field]!r:.80}")
        has_id = id_field is not None and row.get(id_field) not in (None, "")
        sample_id = str(row[id_field]) if has_id else f"{stem}-{number}"
        if sample_id in seen:
            raise DatasetError(f"{where}: id {sample_id!r} was already used at {seen[sample_id]}; ids must be unique")
        seen[sample_id] = where
        sample = {**row, "id": sample_id, "prompt": row[prompt_field]}
        if answer_field is not None:
            sample["answer"] = row[answer_field]
        samples.append(sample)
    if not samples:
        raise DatasetError(f"{path} holds no samples")
    return samples


def _field_hint(field: str, prompt_field: str) -> str:
    if field == prompt_field:
        return "pass prompt_field= to name the field that holds the prompt"
    return "pass answer_field= to name the field that holds the answer, or answer_field=None if there is none"


def _guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    formats = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
    if suffix not in formats:
        raise DatasetError(f"cannot tell the format of {path} from its name; pass format= one of {', '.join(FORMATS)}")
    return formats[suffix]


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DatasetError(
                        f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno}); "
                        "each line must be one JSON object"
                    ) from None
                except RecursionError:
                    raise DatasetError(f"{path}, line {number}: JSON nested too deeply to read") from None
                if not isinstance(row, dict):
                    raise DatasetError(f"{path}, line {number}: a JSON {type(row).__name__}, not an object")
                if "\\u" in line and not _encodable(row):
                    raise DatasetError(
                        f"{path}, line {number}: holds a lone surrogate (an escape such as \\ud800 without its "
                        "pair), which is not text and could never be sent, cached or stored; fix the line"
                    )
                yield f"line {number}", row
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
        raise DatasetError(f"{path}: cannot be read as UTF-8 JSON lines ({error})") from None


def _encodable(row: dict) -> bool:
    try:
        json.dumps(row, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _read_csv(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row:
                    raise DatasetError(f"{path}, line {reader.line_num}: more cells than the header has columns")
                if None in row.values():  # (an unclosed quote runs to the end of the file and leaves cells out)
                    raise DatasetError(f"{path}, line {reader.line_num}: fewer cells than the header has columns")
                yield f"line {reader.line_num}", row
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error})") from None
    except csv.Error as error:
        raise DatasetError(f"{path}: malformed CSV ({error})") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise DatasetError("reading Parquet needs pyarrow: pip install 'tfgrpo[data]'") from error
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise DatasetError(f"{path}: not a readable Parquet file ({error})") from None
    for number, row in enumerate(rows, start=1):
        yield f"row {number}", row


def split(samples: Sequence[dict], test_fraction: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test): about `test_fraction` of the samples in test, chosen by `seed`. Samples with the
    same prompt always land on the same side; each side keeps the input order."""
    if not (isinstance(test_fraction, int | float) and 0 <= test_fraction <= 1):
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    groups: dict[str, int] = {}
    for sample in samples:
        groups[sample["prompt"]] = groups.get(sample["prompt"], 0) + 1
    prompts = list(groups)
    random.Random(seed).shuffle(prompts)
    target = round(test_fraction * len(samples))
    test_prompts: set[str] = set()
    count = 0
    for prompt in prompts:
        if count >= target:
            break
        test_prompts.add(prompt)
        count += groups[prompt]
    train = [s for s in samples if s["prompt"] not in test_prompts]
    test = [s for s in samples if s["prompt"] in test_prompts]
    return train, test
