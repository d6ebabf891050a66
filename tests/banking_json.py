"""A structured-output task built from public data, for measuring LLM fine-tuning on a real model
(bench/llm_quality.py and tests/training/test_real_llm_quality.py).

BANKING77 (customer messages to a bank, each labelled with one of 77 intents) becomes chat
rows: a system prompt that states the task and the keys, the customer's message as the user
turn, and as the answer one JSON object with exactly two keys:

- `intent`: the row's BANKING77 label, as the data set spells it;
- `topic`: a coarse group of that label, by a fixed rule on the label's words (`topic_of`):
  fees, top_up, cash, exchange, transfer, card, identity or other.

Both are derived from the data; nothing is annotated by hand. Rows are drawn without
replacement from one seeded shuffle of the file, so the training rows, the job's validation
rows and the held-out prompts never share a message.

For DPO, each row becomes a preference pair: the correct JSON is chosen; the rejected answer
is, in turn, the JSON with another intent of the same topic (a near miss), the JSON with
another topic's intent, the right intent in a JSON object with a key missing, or a prose
reply in the base model's manner.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS = ("intent", "topic")
TOPICS = ("fees", "top_up", "cash", "exchange", "transfer", "card", "identity", "other")
# The first group whose words occur in a label is its topic (fees before the thing charged).
TOPIC_WORDS = (
    ("fees", ("charge", "fee")),
    ("top_up", ("top_up", "topping_up")),
    ("cash", ("cash", "atm", "cheque")),
    ("exchange", ("exchange", "currenc")),
    ("transfer", ("transfer", "beneficiary", "receiving_money", "direct_debit")),
    ("card", ("card", "pin", "contactless", "pay", "visa")),
    ("identity", ("identity", "passcode", "personal_details", "source_of_funds")),
)
SYSTEM_PROMPT = (
    "You route customer messages for a bank's support team. Reply with one JSON object and "
    'nothing else, with exactly two keys: "intent" (the BANKING77 intent, in snake_case) and '
    f'"topic" (one of: {", ".join(TOPICS)}).'
)
PROSE_REPLIES = (
    "I'm sorry to hear that. Please contact our support team and they will help you with {}.",
    "Thank you for reaching out! It sounds like your question is about {}. Let me help.",
    "That question is about {}. Could you give me a few more details?",
)


def topic_of(intent: str) -> str:
    """The coarse group of a BANKING77 label (see TOPIC_WORDS); `other` when none matches."""
    name = intent.lower()
    for topic, words in TOPIC_WORDS:
        if any(word in name for word in words):
            return topic
    return "other"


def answer_of(intent: str) -> str:
    """The expected answer to a message of `intent`: the JSON object, as the rows carry it."""
    return json.dumps({"intent": intent, "topic": topic_of(intent)})


def prompt_of(text: str) -> list[dict[str, str]]:
    """The conversation before the answer: the system prompt and the customer's message."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": text},
    ]


@dataclass(frozen=True)
class Example:
    text: str
    intent: str

    @property
    def topic(self) -> str:
        return topic_of(self.intent)

    def chat_row(self) -> dict[str, Any]:
        """A `chat` row of a supervised job's file."""
        return {
            "messages": [
                *prompt_of(self.text),
                {"role": "assistant", "content": answer_of(self.intent)},
            ]
        }


def read_examples(data: Path) -> list[Example]:
    """Every row of `banking77-train.csv` under `data`, in file order."""
    with (data / "banking77-train.csv").open(newline="", encoding="utf-8") as handle:
        return [Example(r["text"].strip(), r["category"]) for r in csv.DictReader(handle)]


def draw(data: Path, sizes: dict[str, int], seed: int) -> dict[str, list[Example]]:
    """Disjoint samples of the sizes asked for (e.g. train, validation, held_out), taken in
    turn from one seeded shuffle of the file."""
    examples = read_examples(data)
    if sum(sizes.values()) > len(examples):
        raise ValueError(f"{sum(sizes.values())} examples asked for, {len(examples)} in the file")
    random.Random(seed).shuffle(examples)
    drawn, start = {}, 0
    for name, size in sizes.items():
        drawn[name] = examples[start : start + size]
        start += size
    return drawn


def preference_row(example: Example, index: int, intents: list[str]) -> dict[str, Any]:
    """A preference pair as a DPO job reads it (`{"prompt": [messages], "chosen": [message],
    "rejected": [message]}`): the correct JSON chosen, a wrong answer of the kind `index`
    picks (see the module's docstring) rejected."""
    rng = random.Random(f"{example.text}|{index}")
    kind = index % 4
    same_topic = [i for i in intents if i != example.intent and topic_of(i) == example.topic]
    other_topic = [i for i in intents if topic_of(i) != example.topic]
    if kind == 0 and same_topic:
        rejected = answer_of(rng.choice(same_topic))
    elif kind in (0, 1):
        rejected = answer_of(rng.choice(other_topic))
    elif kind == 2:
        rejected = json.dumps({"intent": example.intent})
    else:
        rejected = rng.choice(PROSE_REPLIES).format(example.intent.replace("_", " "))
    return {
        "prompt": prompt_of(example.text),
        "chosen": [{"role": "assistant", "content": answer_of(example.intent)}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def preference_rows(examples: list[Example], intents: list[str]) -> list[dict[str, Any]]:
    """A preference row per example, the kinds of rejected answer in turn."""
    return [preference_row(e, i, intents) for i, e in enumerate(examples)]


def openai_preference(row: dict[str, Any]) -> dict[str, Any]:
    """A preference row as a DPO file's line in OpenAI's layout (`openai_preference`)."""
    return {
        "input": {"messages": row["prompt"]},
        "preferred_output": row["chosen"],
        "non_preferred_output": row["rejected"],
    }


def judge(answer: str, example: Example) -> dict[str, bool]:
    """One generated answer against its example: valid JSON (an object or array, a ```json
    fence allowed, as the product's generation checks read it), an object with exactly KEYS,
    and whether its intent and topic are right."""
    from tuneforge.training.generation_checks import parse_json

    value = parse_json(answer)
    exact = isinstance(value, dict) and set(value) == set(KEYS)
    return {
        "json_valid": value is not None,
        "exact_keys": exact,
        "intent_correct": exact and value["intent"] == example.intent,
        "topic_correct": exact and value["topic"] == example.topic,
    }


def generation_quality(
    model: Any, tokenizer: Any, examples: list[Example], max_new_tokens: int = 48
) -> dict[str, Any]:
    """Greedy answers (the product's generation checks' `generate_answers`) to the examples'
    prompts, judged: the share of each verdict, and a few answers to read."""
    from tuneforge.training.generation_checks import generate_answers

    answers, _ = generate_answers(
        model, tokenizer, [prompt_of(e.text) for e in examples], max_new_tokens
    )
    verdicts = [judge(a, e) for a, e in zip(answers, examples, strict=True)]
    shares = {
        f"{name}_share": sum(v[name] for v in verdicts) / len(verdicts) for name in verdicts[0]
    }
    return {
        **shares,
        "prompts": len(examples),
        "examples": [
            {"message": e.text, "answer": a, "expected": answer_of(e.intent)}
            for e, a in list(zip(examples, answers, strict=True))[:5]
        ],
    }


def preference_figures(
    policy: Any, reference: Any, tokenizer: Any, rows: list[dict[str, Any]], beta: float
) -> dict[str, dict[str, float]]:
    """How a DPO model (`policy`) and the model it started from (`reference`) judge preference
    rows, each answer scored once per model:

    - `reward_accuracy`, `reward_margin`: DPO's implicit reward, beta x (the model's
      log-probability of an answer minus the reference's): the share of pairs whose chosen
      answer gets the higher reward and the mean margin, chosen minus rejected. The reference
      against itself has reward 0 everywhere: accuracy 0 (a tie is no preference), margin 0;
    - `preference_accuracy`, `logp_margin`: without a reference, as the jobs measure
      (`chat_measures.preference_metrics`): the share of pairs whose chosen answer is the
      more likely one, and the mean log-probability margin in nats.

    Returns {"start": figures of the reference, "tuned": figures of the policy}."""
    from tuneforge.training.chat_measures import token_scores
    from tuneforge.training.llm import tokenize_conversation

    tokenized = [
        tokenize_conversation(tokenizer, r["prompt"] + answer)
        for r in rows
        for answer in (r["chosen"], r["rejected"])
    ]
    ref = [s for s, _, _ in token_scores(reference, tokenized)]
    pol = [s for s, _, _ in token_scores(policy, tokenized)]

    def figures(scores: list[float]) -> dict[str, float]:
        rewards = [beta * (p - q) for p, q in zip(scores, ref, strict=True)]
        reward_margins = [c - r for c, r in zip(rewards[::2], rewards[1::2], strict=True)]
        margins = [c - r for c, r in zip(scores[::2], scores[1::2], strict=True)]
        return {
            "reward_accuracy": sum(m > 0 for m in reward_margins) / len(rows),
            "reward_margin": sum(reward_margins) / len(rows),
            "preference_accuracy": sum(m > 0 for m in margins) / len(rows),
            "logp_margin": sum(margins) / len(rows),
        }

    return {"start": figures(ref), "tuned": figures(pol)}
