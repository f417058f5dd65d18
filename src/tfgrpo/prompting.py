"""How experiences enter a prompt: few-shot examples in the spec's `Q: ... A: ...` form by default,
templates configurable, kept within a token budget."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .agents.trajectory import Trajectory
from .core.experience import Experience, approx_tokens
from .core.library import TrainingFreeGRPO
from .errors import ConfigError

Prompt = str | list[dict[str, str]]
EXAMPLE_FORMATS = ("text", "turns")
WRONG_ANSWER = "Wrong answer:"
"""With `contrast`, in text: the line after an example's query that shows its group's failure."""
CORRECTION = "That answer is wrong. Try again."
"""With `contrast`, in turns: the user's reply to the failure, before the assistant's right answer."""


@dataclass(frozen=True)
class PromptTemplate:
    """`example` renders one experience ({prompt}, {response}); `query` renders the new prompt
    ({prompt}); `instruction`, when set, goes first as a system message."""

    example: str = "Q: {prompt}\nA: {response}\n\n"
    query: str = "Q: {prompt}\nA:"
    instruction: str | None = None

    def __post_init__(self) -> None:
        for name, fields in (("example", ("{prompt}", "{response}")), ("query", ("{prompt}",))):
            text = getattr(self, name)
            missing = [f for f in fields if f not in text]
            if missing:
                raise ConfigError(f"PromptTemplate.{name} must contain {', '.join(missing)}")
            try:
                text.format(prompt="", response="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"PromptTemplate.{name} has a placeholder other than {{prompt}}/{{response}} ({exc!r}); "
                    "write literal braces as {{ and }}"
                ) from None


def with_lessons(template: PromptTemplate, lessons_block: str, placement: str = "system") -> PromptTemplate:
    """`template` with rendered lessons (`LessonLibrary.render()`) put after its instruction, which
    becomes the system message of a chat prompt (`placement="system"`), or before the query ("user").
    Everything else stays, so a prompt with lessons differs from one without only by the lessons."""
    if placement not in ("system", "user"):
        raise ConfigError(f"lesson placement must be 'system' or 'user', got {placement!r}")
    if not lessons_block:
        return template
    if placement == "system":
        return replace(template, instruction="\n\n".join(t for t in (template.instruction, lessons_block) if t))
    escaped = lessons_block.replace("{", "{{").replace("}", "}}")
    return replace(template, query=f"{escaped}\n\n{template.query}")


def select_examples(
    grpo: TrainingFreeGRPO | None,
    prompt: str,
    shots: int,
    exclude_same_prompt: bool = True,
    select: str = "sample",
    retrieval_mode: str = "semantic",
    advantage_weight: float = 0.0,
    min_relevance: float = 0.0,
    where: dict[str, str] | None = None,
    where_fallback: bool = False,
) -> list[Experience]:
    """Up to `shots` distinct experiences, best advantage first: drawn by advantage (`select="sample"`)
    or the most relevant to the prompt (`select="retrieve"`, with `retrieval_mode` lexical, semantic or
    hybrid; `advantage_weight` w > 0 ranks by (1 - w) * relevance + w * advantage instead, both scaled
    over the candidates; those below `min_relevance`, in [0, 1], are left out; `where`: only those whose
    metadata holds these pairs; with `where_fallback`, a prompt for which the filter finds none gets the
    unfiltered choice instead). Experiences of the very same prompt are left out by default, since they
    would hand the model its own answer."""
    if select not in ("sample", "retrieve"):
        raise ConfigError(f"select must be 'sample' or 'retrieve', got {select!r}")
    if grpo is None or shots <= 0 or grpo.library_size() == 0:
        return []
    if where and select != "retrieve":
        raise ConfigError("a metadata filter (where) applies to select='retrieve' only")
    if select == "sample":
        candidates = grpo.sample_multiple(min(grpo.library_size(), 4 * shots), replace=False)
    else:
        options: dict[str, float] = {"advantage_weight": advantage_weight} if advantage_weight > 0 else {}
        if min_relevance > 0:
            options["min_similarity"] = min_relevance
        candidates = grpo.get_experiences_for_prompt(prompt, k=4 * shots, mode=retrieval_mode, where=where, **options)
    chosen, seen = [], set()
    for exp in candidates:
        if (exclude_same_prompt and exp.prompt == prompt) or exp.response in seen:
            continue
        seen.add(exp.response)
        chosen.append(exp)
        if len(chosen) == shots:
            break
    if not chosen and where and where_fallback:  # nothing of the prompt's own kind yet: borrow from the rest
        return select_examples(
            grpo, prompt, shots, exclude_same_prompt, select, retrieval_mode, advantage_weight, min_relevance
        )
    chosen.sort(key=lambda e: e.advantage, reverse=True)
    return chosen


def build_prompt(
    prompt: str,
    examples: Sequence[Experience] = (),
    template: PromptTemplate = PromptTemplate(),
    token_budget: int | None = None,
    count_tokens: Callable[[str], int] = approx_tokens,
    chat: bool = True,
    example_format: str = "text",
    contrast: bool = False,
) -> Prompt:
    """The few-shot prompt for `prompt`: examples in order while they fit `token_budget` (counted for
    the examples only, in their `template.example` form), then the query. The template's instruction
    becomes a system message for chat models (a message list), or the first paragraph of a plain-text
    prompt. In chat, `example_format="turns"` puts each example in as a conversation turn of its own (a
    user message with its query, the assistant's message with its response) instead of `template.example`
    text inside the user message; without examples, or in plain text, both formats give the same prompt.

    With `contrast`, an example whose metadata holds its group's failure (`contrast_response`) shows it
    first: in text, a `Wrong answer: ...` line after the example's prompt (so before the template's answer
    cue: `Q: ...`, `Wrong answer: ...`, `A: ...`); in turns, the failure as the assistant's first answer,
    the user's `CORRECTION`, then the right answer. The failure is data: put into the text, never formatted."""
    if example_format not in EXAMPLE_FORMATS:
        raise ConfigError(f"example_format must be one of {', '.join(EXAMPLE_FORMATS)}, got {example_format!r}")
    examples = fit_examples(examples, template, token_budget, count_tokens, contrast)
    query = template.query.format(prompt=prompt)
    system = [{"role": "system", "content": template.instruction}] if template.instruction else []
    if chat and example_format == "turns" and examples:
        turns = [
            {"role": role, "content": content} for e in examples for role, content in _turns(e, template, contrast)
        ]
        return [*system, *turns, {"role": "user", "content": query}]
    user = "".join(_example_text(e, template, contrast) for e in examples) + query
    if not template.instruction:
        return user
    if chat:
        return [*system, {"role": "user", "content": user}]
    return f"{template.instruction}\n\n{user}"


def contrast_of(example: Experience) -> str | None:
    """The failure recorded beside an example (`ExampleUpdate`), as it is shown; None when there is none."""
    failure = (example.stored_metadata or {}).get("contrast_response")
    return None if failure is None else failure.strip() or "(no answer)"


def _example_text(example: Experience, template: PromptTemplate, contrast: bool) -> str:
    failure = contrast_of(example) if contrast else None
    prompt = example.prompt if failure is None else f"{example.prompt}\n{WRONG_ANSWER} {failure}"
    return template.example.format(prompt=prompt, response=example.response)


def _turns(example: Experience, template: PromptTemplate, contrast: bool) -> list[tuple[str, str]]:
    failure = contrast_of(example) if contrast else None
    wrong = [] if failure is None else [("assistant", failure), ("user", CORRECTION)]
    run = trajectory_of(example)
    answer = run.turns_as_messages() if run is not None else [("assistant", example.response.strip())]
    return [("user", template.query.format(prompt=example.prompt)), *wrong, *answer]


def trajectory_of(example: Experience) -> Trajectory | None:
    """The agent run an example was stored from (`ExampleUpdate` keeps it when the run used tools), or None
    (a completion, or metadata that is not a stored run). As text, an example is its transcript (the
    response); as turns, each assistant turn and each tool result (as the user message that fed it back)."""
    raw = (example.stored_metadata or {}).get("trajectory")
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Trajectory.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError):
        return None


def _fitting(texts: Sequence[str], token_budget: int, count_tokens: Callable[[str], int]) -> list[int]:
    """Indices of the texts taken in order while they fit the budget (a shorter one further on may still fit)."""
    chosen, used = [], 0
    for i, text in enumerate(texts):
        cost = count_tokens(text)
        if used + cost <= token_budget:
            chosen.append(i)
            used += cost
    return chosen


def fit_examples(
    examples: Sequence[Experience],
    template: PromptTemplate = PromptTemplate(),
    token_budget: int | None = None,
    count_tokens: Callable[[str], int] = approx_tokens,
    contrast: bool = False,
) -> list[Experience]:
    """The examples `build_prompt` would put into a prompt under `token_budget` (to say which ones went in);
    with `contrast`, each counted with the failure it shows."""
    if token_budget is None:
        return list(examples)
    texts = [_example_text(e, template, contrast) for e in examples]
    return [examples[i] for i in _fitting(texts, token_budget, count_tokens)]


def inject_messages(
    messages: Sequence[dict],
    examples: Sequence[Experience] = (),
    template: PromptTemplate = PromptTemplate(),
    token_budget: int | None = None,
    count_tokens: Callable[[str], int] = approx_tokens,
    example_format: str = "text",
    contrast: bool = False,
) -> list[dict]:
    """A caller's chat `messages` with experiences and lessons put in exactly as `build_prompt` puts them
    into a training prompt: the last user message (its content must be a string) becomes the few-shot
    prompt for its text (with `example_format="turns"`, the example turns go just before it), and the
    template's instruction (`with_lessons`) is added to the first message when it is a system message, or
    goes before everything as one. Every other message, and every other field of the edited ones, is left
    as it was."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None or not isinstance(messages[last].get("content"), str):
        raise ConfigError("inject_messages needs a user message whose content is a string")
    built = build_prompt(
        messages[last]["content"], examples, template, token_budget, count_tokens, True, example_format, contrast
    )
    built = [{"role": "user", "content": built}] if isinstance(built, str) else built
    system = built[0]["content"] if built[0]["role"] == "system" else None
    turns, user = built[1 if system is not None else 0 : -1], built[-1]["content"]
    out = [dict(m) for m in messages]
    out[last]["content"] = user
    out[last:last] = turns
    if system:
        first = out[0]
        if first.get("role") == "system" and isinstance(first.get("content"), str):
            first["content"] = f"{first['content']}\n\n{system}" if first["content"] else system
        else:
            out.insert(0, {"role": "system", "content": system})
    return out
