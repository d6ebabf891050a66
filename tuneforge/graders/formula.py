"""The `calculate_output` formula of a multi grader: arithmetic over the sub-graders' rewards,
read by a parser of its own (nothing is handed to `eval`).

| written                     | means                                                    |
|-----------------------------|----------------------------------------------------------|
| `0.5 * name + 0.5 * args`   | sub-graders by their keys in `graders`; numbers          |
| `+ - * /`, `^` or `**`      | the usual precedence; `^`/`**` is the power, right first |
| `( … )`, unary `-`          |                                                          |
| `min(a, b, …)`, `max(…)`    | any number of arguments                                  |
| `abs floor ceil exp sqrt`   | one argument                                             |
| `log(x)`, `log(x, base)`    | natural logarithm, or to `base`                          |

`parse` checks a formula once (syntax, names, function arity) and gives a `Formula` to
evaluate for each sample; evaluation errors (division by zero, `sqrt(-1)`, overflow) are
`FormulaError`s too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

MAX_LENGTH = 1000
MAX_DEPTH = 50
TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>\*\*|[-+*/^(),]))"
)


def _log(x: float, base: float = math.e) -> float:
    return math.log(x, base)


# name: (function, fewest arguments, most arguments or None)
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {
    "min": (min, 1, None),
    "max": (max, 1, None),
    "abs": (abs, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log": (_log, 1, 2),
}
BINARY: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "^": lambda a, b: a**b,
}


class FormulaError(ValueError):
    """A formula that does not parse, or one that has no value for these rewards."""


# The parsed formula, as nested tuples: ("num", x), ("var", name), ("neg", node),
# ("bin", op, left, right), ("call", name, args).
Node = tuple


@dataclass(frozen=True)
class Formula:
    """A parsed formula; `names`: the sub-graders it reads."""

    text: str
    tree: Node
    names: frozenset[str]

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The formula's value for these rewards; FormulaError when it has none (or it is
        not a finite number)."""
        try:
            result = float(_evaluate(self.tree, values))
        except (ArithmeticError, ValueError) as error:  # ZeroDivision, Overflow, domain
            raise FormulaError(f"{self.text!r} has no value here: {error}") from None
        if not math.isfinite(result):
            raise FormulaError(f"{self.text!r} is {result} here.")
        return result


def parse(text: str, names: Collection[str]) -> Formula:
    """Parse `text`, whose variables must be among `names`; FormulaError says what is wrong."""
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"The formula is longer than {MAX_LENGTH} characters.")
    parser = _Parser(_tokens(text), set(names))
    tree = parser.expression(0)
    if parser.peek() is not None:
        raise FormulaError(f"Unexpected {parser.peek()!r} in {text!r}.")
    return Formula(text, tree, frozenset(parser.used))


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip() == "":
                break
            raise FormulaError(f"Cannot read {text[position:].strip()[:20]!r} in {text!r}.")
        tokens.append(match.group(match.lastgroup or 0))
        position = match.end()
    if not tokens:
        raise FormulaError("The formula is empty.")
    return tokens


class _Parser:
    """Recursive descent: expression := term (+|- term)*; term := unary (*|/ unary)*;
    unary := -unary | power; power := atom (^ unary)?; atom := number | name | call | (…)."""

    def __init__(self, tokens: list[str], names: set[str]):
        self.tokens = tokens
        self.position = 0
        self.names = names
        self.used: set[str] = set()

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise FormulaError("The formula ends too early.")
        self.position += 1
        return token

    def expect(self, token: str) -> None:
        found = self.take()
        if found != token:
            raise FormulaError(f"Expected {token!r}, found {found!r}.")

    def expression(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise FormulaError(f"The formula nests deeper than {MAX_DEPTH} levels.")
        node = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            node = ("bin", op, node, self.term(depth))
        return node

    def term(self, depth: int) -> Node:
        node = self.unary(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            node = ("bin", op, node, self.unary(depth))
        return node

    def unary(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise FormulaError(f"The formula nests deeper than {MAX_DEPTH} levels.")
        if self.peek() in ("-", "+"):
            op = self.take()
            operand = self.unary(depth + 1)
            return ("neg", operand) if op == "-" else operand
        return self.power(depth)

    def power(self, depth: int) -> Node:
        base = self.atom(depth)
        if self.peek() in ("^", "**"):
            self.take()
            return ("bin", "^", base, self.unary(depth + 1))
        return base

    def atom(self, depth: int) -> Node:
        token = self.take()
        if token == "(":
            node = self.expression(depth + 1)
            self.expect(")")
            return node
        if token[0].isdigit() or token[0] == ".":
            return ("num", float(token))
        if token[0].isalpha() or token[0] == "_":
            if self.peek() == "(":
                return self.call(token, depth)
            if token not in self.names:
                known = ", ".join(sorted(self.names)) or "none"
                hint = " (a function needs parentheses)" if token in FUNCTIONS else ""
                raise FormulaError(
                    f"{token!r} is no grader of this multi grader{hint}; graders: {known}."
                )
            self.used.add(token)
            return ("var", token)
        raise FormulaError(f"Unexpected {token!r}.")

    def call(self, name: str, depth: int) -> Node:
        if name not in FUNCTIONS:
            raise FormulaError(
                f"{name}() is no function of formulas; they are: {', '.join(FUNCTIONS)}."
            )
        self.expect("(")
        args: list[Node] = []
        if self.peek() != ")":
            args.append(self.expression(depth + 1))
            while self.peek() == ",":
                self.take()
                args.append(self.expression(depth + 1))
        self.expect(")")
        _, fewest, most = FUNCTIONS[name]
        if len(args) < fewest or (most is not None and len(args) > most):
            if most is None:
                wanted = f"{fewest} or more arguments"
            elif most == fewest:
                wanted = f"{fewest} argument" + ("s" if fewest > 1 else "")
            else:
                wanted = f"{fewest} to {most} arguments"
            raise FormulaError(f"{name}() takes {wanted}, not {len(args)}.")
        return ("call", name, tuple(args))


def _evaluate(node: Node, values: Mapping[str, float]) -> float:
    kind = node[0]
    if kind == "num":
        return float(node[1])
    if kind == "var":
        return float(values[node[1]])
    if kind == "neg":
        return -_evaluate(node[1], values)
    if kind == "bin":
        left, right = _evaluate(node[2], values), _evaluate(node[3], values)
        result = BINARY[node[1]](left, right)
        if isinstance(result, complex):  # (-8) ^ 0.5
            raise ValueError("a negative number to a fractional power")
        return result
    function = FUNCTIONS[node[1]][0]
    return float(function(*(_evaluate(arg, values) for arg in node[2])))
