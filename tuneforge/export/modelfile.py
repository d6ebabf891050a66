"""The Ollama `Modelfile` next to a GGUF file: its chat TEMPLATE (Go template syntax) derived
from the model's own Jinja chat template, SYSTEM, and `PARAMETER stop` for the end tokens.

The TEMPLATE is derived by rendering the Jinja template with marker contents: a conversation
is then START + one block per message + the generation prompt, each block the role's prefix,
the content and the role's suffix. Templates that do not fit that shape (content-dependent
rewriting, a system prompt folded into the first user turn) are refused. Every derived
TEMPLATE is rendered back (`render_template`, the subset of Go's text/template the TEMPLATE
uses) and compared with the Jinja rendering on real conversations before an export succeeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import TemplateError

ROLES = ("system", "user", "assistant")
# Contents that no template writes itself: private-use characters around a letter.
_MARK = {role: f"\ue000{role[0].upper()}\ue001" for role in ROLES}
_OTHER_USER = "\ue000V\ue001"


@dataclass
class ChatShape:
    """A chat template as START + blocks + generation prompt."""

    start: str  # before the first message (a BOS text, say)
    blocks: dict[str, tuple[str, str]]  # role -> (prefix, suffix) around the content
    generation: str  # after the last message when a reply is wanted
    default_system: str = ""  # written when the first message is not a system message
    stops: list[str] = field(default_factory=list)


def chat_shape(tokenizer: Any) -> ChatShape:
    """Derive the shape of `tokenizer.chat_template`, or raise TemplateError."""

    def render(messages: list[dict[str, str]], generation: bool = False) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation
            )
        )

    user = {"role": "user", "content": _MARK["user"]}
    assistant = {"role": "assistant", "content": _MARK["assistant"]}
    second = {"role": "user", "content": _OTHER_USER}
    one = render([user])
    two = render([user, assistant])
    three = render([user, assistant, second])
    if not (two.startswith(one) and three.startswith(two)):
        raise TemplateError(
            "The chat template rewrites earlier turns when a turn is added; Ollama's TEMPLATE "
            "cannot express that.",
            param="model",
        )
    blocks = {
        "assistant": _split(two[len(one) :], _MARK["assistant"]),
        "user": _split(three[len(two) :], _OTHER_USER),
    }
    user_block = "".join((blocks["user"][0], _MARK["user"], blocks["user"][1]))
    if not one.endswith(user_block):
        raise TemplateError("The first user turn is written unlike later ones.", param="model")
    start = one[: -len(user_block)]
    generation = render([user], generation=True)
    if not generation.startswith(one):
        raise TemplateError("The generation prompt rewrites the conversation.", param="model")
    shape = ChatShape(start, blocks, generation[len(one) :])
    _add_system(shape, tokenizer, render, user_block)
    shape.stops = _stops(tokenizer, blocks["assistant"][1])
    return shape


def _split(block: str, mark: str) -> tuple[str, str]:
    if block.count(mark) != 1:
        raise TemplateError("The chat template does not write message contents as they are.")
    prefix, suffix = block.split(mark)
    return prefix, suffix


def _add_system(shape: ChatShape, tokenizer: Any, render: Any, user_block: str) -> None:
    """The system block, and a default system prompt the template writes when none is given
    (Qwen2.5 does)."""
    system = {"role": "system", "content": _MARK["system"]}
    try:
        text = render([system, {"role": "user", "content": _MARK["user"]}])
    except Exception:  # templates that refuse system messages: the TEMPLATE has no system case
        return
    if not text.endswith(user_block) or text.count(_MARK["system"]) != 1:
        raise TemplateError(
            "The chat template folds the system prompt into another turn; Ollama's TEMPLATE "
            "cannot express that.",
            param="model",
        )
    before, after = text[: -len(user_block)].split(_MARK["system"])
    if before.startswith(shape.start):
        shape.blocks["system"] = (before[len(shape.start) :], after)
        return
    # The start differs once a system message is given: it holds a default system block.
    bos = tokenizer.bos_token or ""
    head = bos if bos and before.startswith(bos) and shape.start.startswith(bos) else ""
    prefix = before[len(head) :]
    if not (shape.start.startswith(head + prefix) and shape.start.endswith(after)):
        raise TemplateError(
            "The chat template starts differently with a system prompt in a way Ollama's "
            "TEMPLATE cannot express.",
            param="model",
        )
    shape.blocks["system"] = (prefix, after)
    shape.default_system = shape.start[len(head) :]
    shape.start = head


def _stops(tokenizer: Any, assistant_suffix: str) -> list[str]:
    """The special tokens that end an assistant turn, and the eos token."""
    specials = set(tokenizer.all_special_tokens) | {
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special
    }
    stops = [t for t in sorted(specials, key=len, reverse=True) if t and t in assistant_suffix]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    return stops


# -- the Go template ---------------------------------------------------------------------------


def _literal(text: str) -> str:
    if "{{" in text or "}}" in text:
        raise TemplateError("The chat template writes '{{' or '}}', which Go templates cannot.")
    return text


def go_template(shape: ChatShape, *, drop_bos: str | None = None) -> str:
    """The Ollama TEMPLATE for `shape`. `drop_bos`: a BOS text left out of the start because
    the GGUF file has llama.cpp add the BOS token itself."""
    start = shape.start
    if drop_bos and start.startswith(drop_bos):
        start = start[len(drop_bos) :]
    parts = [_literal(start)]
    if shape.default_system:
        parts.append(
            '{{ if ne (index .Messages 0).Role "system" }}'
            + _literal(shape.default_system)
            + "{{ end }}"
        )
    parts.append("{{ range .Messages }}")
    branches = [role for role in ROLES if role in shape.blocks]
    for i, role in enumerate(branches):
        prefix, suffix = shape.blocks[role]
        keyword = "if" if i == 0 else "else if"
        parts.append(
            f'{{{{ {keyword} eq .Role "{role}" }}}}'
            + _literal(prefix)
            + "{{ .Content }}"
            + _literal(suffix)
        )
    parts.append("{{ end }}{{ end }}")
    parts.append(_literal(shape.generation))
    return "".join(parts)


def modelfile(gguf_name: str, template: str, stops: list[str], system: str | None) -> str:
    """The Modelfile text: FROM the GGUF next to it, TEMPLATE, SYSTEM, stop parameters."""
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{_triple_quoted(template)}"""']
    if system:
        lines.append(f'SYSTEM """{_triple_quoted(system)}"""')
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"


def _triple_quoted(text: str) -> str:
    if '"""' in text:
        raise TemplateError('A Modelfile value cannot contain """.')
    return text


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- rendering the Go template back --------------------------------------------------------------

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


def render_template(template: str, messages: list[dict[str, str]]) -> str:
    """Render a TEMPLATE written by `go_template` as Go's text/template would for Ollama's
    `.Messages`: the constructs it uses (text, range over .Messages, if / else if / end with
    `eq`/`ne`, `.Role`, `.Content`, `(index .Messages 0).Role`), nothing more."""
    tokens: list[tuple[str, str]] = []
    position = 0
    for match in _ACTION.finditer(template):
        tokens.append(("text", template[position : match.start()]))
        tokens.append(("action", match.group(1)))
        position = match.end()
    tokens.append(("text", template[position:]))
    tree, rest = _parse(tokens, 0)
    if rest != len(tokens):
        raise TemplateError("Unbalanced {{ end }} in the template.")
    out: list[str] = []
    _run(tree, {"Messages": messages}, None, out)
    return "".join(out)


def _parse(tokens: list[tuple[str, str]], i: int) -> tuple[list[Any], int]:
    """Nodes until an `end`/`else` (not consumed): ("text", s), ("field", name),
    ("range", body), ("if", [(condition, body), ...])."""
    nodes: list[Any] = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
        elif value in ("end", "else") or value.startswith("else if "):
            return nodes, i
        elif value == "range .Messages":
            body, i = _parse(tokens, i + 1)
            nodes.append(("range", body))
            i = _expect_end(tokens, i)
        elif value.startswith("if "):
            branches = []
            condition = value[3:]
            while True:
                body, i = _parse(tokens, i + 1)
                branches.append((condition, body))
                word = tokens[i][1] if i < len(tokens) else ""
                if word.startswith("else if "):
                    condition = word[len("else if ") :]
                elif word == "else":
                    condition = "true"
                else:
                    break
            nodes.append(("if", branches))
            i = _expect_end(tokens, i)
        elif value in (".Role", ".Content"):
            nodes.append(("field", value[1:]))
            i += 1
        else:
            raise TemplateError(f"Unsupported template action {{{{ {value} }}}}.")
    return nodes, i


def _expect_end(tokens: list[tuple[str, str]], i: int) -> int:
    if i >= len(tokens) or tokens[i][1] != "end":
        raise TemplateError("Missing {{ end }} in the template.")
    return i + 1


_COMPARE = re.compile(r'^(eq|ne) (\.Role|\(index \.Messages 0\)\.Role) "([^"]*)"$')


def _truth(condition: str, root: dict[str, Any], message: dict[str, str] | None) -> bool:
    if condition == "true":
        return True
    match = _COMPARE.match(condition)
    if match is None:
        raise TemplateError(f"Unsupported template condition {condition!r}.")
    op, operand, literal = match.groups()
    if operand == ".Role":
        if message is None:
            raise TemplateError(".Role outside range .Messages.")
        value = message["role"]
    else:
        value = root["Messages"][0]["role"]
    return (value == literal) == (op == "eq")


def _run(
    nodes: list[Any], root: dict[str, Any], message: dict[str, str] | None, out: list[str]
) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "field":
            if message is None:
                raise TemplateError(f".{node[1]} outside range .Messages.")
            out.append(message[node[1].lower()])
        elif kind == "range":
            for item in root["Messages"]:
                _run(node[1], root, item, out)
        else:
            for condition, body in node[1]:
                if _truth(condition, root, message):
                    _run(body, root, message, out)
                    break
