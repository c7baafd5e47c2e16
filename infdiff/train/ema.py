"""Exponential moving average (EMA) of a model's parameters."""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn


def _wrapped_module(model: nn.Module) -> Optional[nn.Module]:
    """The module that ``model`` wraps as ``.module`` or ``._orig_mod``, or ``None`` if it is no wrapper.

    It counts as a wrapper only when that attribute is its sole child and it has no
    parameters or buffers of its own, so a model that merely names a submodule
    ``module`` is not mistaken for one.
    """
    own_tensors = [*model.parameters(recurse=False), *model.buffers(recurse=False)]
    for name in ("module", "_orig_mod"):
        inner = getattr(model, name, None)
        if isinstance(inner, nn.Module) and not own_tensors and list(model.children()) == [inner]:
            return inner
    return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside any DDP / ``DataParallel`` / accelerate (``.module``) and ``torch.compile`` wrappers."""
    while (inner := _wrapped_module(model)) is not None:
        model = inner
    return model


class EMA:
    """``θ_ema ← d θ_ema + (1 − d) θ`` every ``update_every`` steps.

    ``ema.model`` is a deep copy of the (unwrapped) model in eval mode without gradients.
    Buffers (e.g. normalisation statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995, update_every: int = 10):
        if not 0.0 <= decay <= 1.0 or update_every < 1:
            raise ValueError(
                f"expected 0 <= decay <= 1 and update_every >= 1, got decay={decay}, update_every={update_every}"
            )
        self.decay = decay
        self.update_every = update_every
        self.model = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)
        self.model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> bool:
        """Fold ``model`` (possibly wrapped) into the average if ``step`` is an update step; returns whether it was."""
        if step % self.update_every != 0:
            return False
        source = unwrap_model(model)
        for ema_param, param in _paired(self.model.named_parameters(), source.named_parameters()):
            if ema_param.is_floating_point():
                ema_param.mul_(self.decay).add_(param.detach(), alpha=1.0 - self.decay)
            else:
                ema_param.copy_(param)
        for ema_buffer, buffer in _paired(self.model.named_buffers(), source.named_buffers()):
            ema_buffer.copy_(buffer)
        return True

    def state_dict(self) -> Dict[str, Any]:
        """The averaged weights (the hyper-parameters come from the constructor)."""
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore weights saved by :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])


def _paired(
    ema_named: Iterable[Tuple[str, torch.Tensor]], source_named: Iterable[Tuple[str, torch.Tensor]]
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``(ema_tensor, source_tensor)`` pairs matched by name; raises if the two models have different tensors."""
    ema_tensors, source_tensors = dict(ema_named), dict(source_named)
    if ema_tensors.keys() != source_tensors.keys():
        missing, extra = ema_tensors.keys() - source_tensors.keys(), source_tensors.keys() - ema_tensors.keys()
        raise ValueError(
            f"EMA.update got a model whose tensors differ from the averaged copy: missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}; pass the same model the EMA was built from"
        )
    return [(tensor, source_tensors[name]) for name, tensor in ema_tensors.items()]
