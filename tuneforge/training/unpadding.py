"""Linear layers that skip the padding of a batch.

A batch of texts is padded to its longest, and every linear layer of a transformer (the
attention's projections, the feed-forward block) then computes the padding's rows as well:
on short texts of varied length a third to a half of the work. The padding's rows are never
read: attention gives padded keys a weight of exactly zero, and the heads read real tokens
only (the first token, the last real one, or a mean under the mask). So while `skip_padding`
is on, each linear layer of the model gathers the real tokens' rows, computes those, and puts
zeros in the padding's rows. The real tokens' values, the loss and every gradient stay the
same (up to float rounding: a matmul over fewer rows may add in another order); dropout draws
the same random numbers, because it still sees the padded shape.

This holds for models whose only mixing between tokens is masked attention. Convolutions or
state-space layers would read the padding's rows, so only the model types in `ATTENTION_ONLY`
are changed; any other model computes as before.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Encoders whose tokens meet only in attention under the padding mask.
ATTENTION_ONLY = frozenset(
    {"albert", "bert", "camembert", "distilbert", "electra", "mpnet", "roberta", "xlm-roberta"}
)


def transformer_of(model: Any) -> Any:
    """The transformers model inside `model` (itself, a peft wrapper's or a
    sentence-transformers module's) when it is one `skip_padding` applies to, else None."""
    from transformers import PreTrainedModel

    found = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if getattr(getattr(found, "config", None), "model_type", None) in ATTENTION_ONLY:
        return found
    return None


class _RealRows:
    """The flat indices of the current batch's real tokens, set from its attention mask, and
    the last rows gathered (the attention's query, key and value layers read one input)."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.index: Any = None
        self.last: tuple[Any, Any] | None = None

    def take(self, mask: Any) -> None:
        self.last = None
        # Nothing to skip without padding. Heads read the first token (BERT's [CLS]); with
        # padding on the left it would be a padded one: such batches are computed in full.
        if mask is None or mask.dim() != 2 or bool(mask.all()) or not bool(mask[:, 0].all()):
            self.shape, self.index = None, None
            return
        self.shape = tuple(mask.shape)
        self.index = mask.reshape(-1).nonzero().squeeze(1)

    def gather(self, hidden: Any) -> Any:
        """The real rows of `hidden` ([batch, tokens, features] of the current batch), or
        None when it is not laid out by token."""
        if self.index is None or hidden.dim() != 3 or tuple(hidden.shape[:2]) != self.shape:
            return None
        if self.last is not None and self.last[0] is hidden:
            return self.last[1]
        real = hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.index)
        self.last = (hidden, real)
        return real

    def scatter(self, real: Any) -> Any:
        """[batch, tokens, features] with `real` in the real tokens' rows, zeros elsewhere."""
        assert self.shape is not None
        out = real.new_zeros(self.shape[0] * self.shape[1], real.shape[-1])
        return out.index_copy_(0, self.index, real).view(*self.shape, real.shape[-1])


def _unpadded(linear: Any, rows: _RealRows) -> Any:
    plain = linear.forward

    @functools.wraps(plain)
    def forward(hidden: Any) -> Any:
        real = rows.gather(hidden)
        return plain(hidden) if real is None else rows.scatter(plain(real))

    return forward


@contextmanager
def skip_padding(model: Any, enabled: bool = True) -> Iterator[str | None]:
    """While inside (and `enabled`), the linear layers of the transformer in `model` compute
    the real tokens only (see the module). Yields the model type it applies to, or None:
    other models run unchanged. The batch's padding is read from the `attention_mask` of each
    call of the transformer; gradient checkpointing's recomputation reuses the last one."""
    import torch

    transformer = transformer_of(model) if enabled else None
    if transformer is None:
        yield None
        return
    rows = _RealRows()
    # The transformer's own forward is wrapped, not hooked: sentence-transformers calls
    # `model.forward` directly, past the module's hooks.
    forward = transformer.forward
    names = list(inspect.signature(forward).parameters)
    position = names.index("attention_mask") if "attention_mask" in names else len(names)

    # Its signature stays the original's: the Trainer keeps the dataset columns it names.
    @functools.wraps(forward)
    def read_mask(*args: Any, **kwargs: Any) -> Any:
        mask = args[position] if len(args) > position else kwargs.get("attention_mask")
        rows.take(mask)
        return forward(*args, **kwargs)

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # A forward set on the instance (accelerate's offloading hooks) is wrapped and put back.
    patched = [(transformer, read_mask)] + [(m, _unpadded(m, rows)) for m in linears]
    own = [module.__dict__.get("forward") for module, _ in patched]
    for module, replacement in patched:
        module.forward = replacement  # type: ignore[method-assign]
    try:
        yield str(transformer.config.model_type)
    finally:
        for (module, _), previous in zip(patched, own, strict=True):
            if previous is None:
                del module.forward  # the class's own again
            else:
                module.forward = previous  # type: ignore[method-assign]
