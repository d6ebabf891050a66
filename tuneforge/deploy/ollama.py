"""The Ollama side of a deployment, through the official `ollama` client: the GGUF file
pushed as a blob, the model created from it with the Modelfile's TEMPLATE, SYSTEM and stop
parameters, greedy answers compared with the export's verified ones, and what was live
before kept aside until the new model has passed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import DeploymentError

# Ollama writes a name without a tag as `name:latest`.
DEFAULT_TAG = ":latest"


@dataclass
class Modelfile:
    """The parts of a Modelfile that /api/create takes as fields."""

    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


_TRIPLE = re.compile(r'^(TEMPLATE|SYSTEM) """(.*?)"""$', re.S | re.M)
_PARAMETER = re.compile(r'^PARAMETER (\w+) (.+)$', re.M)


def read_modelfile(text: str) -> Modelfile:
    """The TEMPLATE, SYSTEM and PARAMETER lines of a Modelfile as the export writes it."""
    found = Modelfile()
    for key, value in _TRIPLE.findall(text):
        setattr(found, key.lower(), value)
    for name, raw in _PARAMETER.findall(text):
        parsed: Any = _unquote(raw.strip())
        if name == "stop":
            found.parameters.setdefault("stop", []).append(parsed)
        else:
            found.parameters[name] = parsed
    return found


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else name + DEFAULT_TAG


def backup_name(name: str, deployment_id: str) -> str:
    """Where the model live under `name` waits while its successor is checked."""
    base, _, tag = full_name(name).rpartition(":")
    return f"{base}-before-{deployment_id[-8:]}:{tag}"


class OllamaServer:
    """One Ollama server; every failure to reach it is a DeploymentError naming its URL."""

    def __init__(self, url: str, timeout: float = 600.0):
        import ollama

        self.url = url
        self.client = ollama.Client(host=url, timeout=timeout)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import httpx
        import ollama

        try:
            return fn(*args, **kwargs)
        except ollama.ResponseError as error:
            raise DeploymentError(
                f"Ollama at {self.url} refused to {what} (HTTP {error.status_code}): "
                f"{error.error}"
            ) from error
        except (ConnectionError, httpx.HTTPError) as error:
            raise DeploymentError(
                f"Ollama at {self.url} is unreachable ({what}): {error}"
            ) from error

    def models(self) -> set[str]:
        listing = self._call("list its models", self.client.list)
        return {full_name(str(m.model)) for m in listing.models if m.model}

    def copy(self, source: str, destination: str) -> None:
        self._call(f"copy {source} to {destination}", self.client.copy, source, destination)

    def delete(self, name: str) -> None:
        self._call(f"delete {name}", self.client.delete, name)

    def create(self, name: str, gguf: Path, modelfile: Modelfile) -> str:
        """Push the GGUF file and create `name` from it; returns the blob's digest."""
        digest = str(self._call("take the GGUF file", self.client.create_blob, gguf))
        self._call(
            f"create {name}",
            self.client.create,
            model=name,
            files={gguf.name: digest},
            template=modelfile.template,
            system=modelfile.system,
            parameters=modelfile.parameters or None,
            stream=False,
        )
        return digest

    def greedy_answer(self, name: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        response = self._call(
            f"answer with {name}",
            self.client.chat,
            model=name,
            messages=messages,
            # Greedy, without Ollama's default repeat penalty (1.1): the export was verified
            # on greedy answers.
            options={"temperature": 0, "top_k": 1, "seed": 0, "repeat_penalty": 1.0,
                     "num_predict": max_tokens},
        )
        return str(response.message.content or "")


def agreement(answer: str, reference: str) -> float:
    """The share of the shorter of two answers that both begin with (1.0 when both are
    empty). Replacement characters are left out of both: a token that ends inside a UTF-8
    sequence decodes to U+FFFD in transformers, and to nothing in llama.cpp's text."""
    answer, reference = answer.replace("\ufffd", ""), reference.replace("\ufffd", "")
    shorter = min(len(answer), len(reference))
    if shorter == 0:
        return 1.0 if answer == reference else 0.0
    same = 0
    for a, b in zip(answer, reference, strict=False):
        if a != b:
            break
        same += 1
    return same / shorter
