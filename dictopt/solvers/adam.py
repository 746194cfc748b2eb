"""Adam for the SAE trainer on CPU: ``torch.optim.Adam``'s arithmetic without its dispatch.

``torch.optim.Adam`` imports ``torch._dynamo`` on first use (1.5–2 s of CPU, a twentieth of
``dictopt demo``) and wraps every step in profiler, grad-mode and compiler hooks that cost more
than the arithmetic on an SAE of a few hundred thousand weights. :class:`CpuAdam` performs the
same in-place tensor operations, in the same order, as torch's single-tensor path (the one torch
takes for CPU tensors with default options), so the parameters it produces are bit-identical
(``tests/test_adam.py`` compares them step by step). Its ``state`` and ``state_dict`` have
torch's layout, so checkpoints load into either optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: The hyperparameters torch's Adam records in each param group, at their defaults.
_GROUP_DEFAULTS: dict[str, Any] = {
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
}


def _step_dtype() -> torch.dtype:
    """The dtype torch keeps Adam's step counter in (float32 unless the default is float64)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class CpuAdam:
    """Adam (Kingma & Ba) with torch's defaults for everything but ``lr`` and ``betas``.

    Parameters
    ----------
    params:
        The tensors to optimise (CPU, real, dense gradients).
    lr:
        Learning rate (the trainer sets ``param_groups[0]["lr"]`` before every step).
    betas:
        ``(β₁, β₂)``.
    eps:
        Added to the denominator.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        params = list(params)
        self.param_groups: list[dict[str, Any]] = [
            {"params": params, "lr": lr, "betas": tuple(betas), "eps": eps, **_GROUP_DEFAULTS}
        ]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step on every parameter with a gradient (torch's ``_single_tensor_adam``
        with ``weight_decay=0``, ``amsgrad=False``, ``maximize=False``, float ``lr``)."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state.get(p)
                if not state:
                    state = self.state[p] = {
                        "step": torch.tensor(0.0, dtype=_step_dtype()),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
                step_t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                step_t += 1
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = step_t.item()
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = lr / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``state`` by parameter index, ``param_groups`` with ``params`` as
        indices (tensors are the optimizer's own, as in torch)."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` or from ``torch.optim.Adam.state_dict()``."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        params = []
        for mine, saved in zip(self.param_groups, groups, strict=True):
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 "match the size of optimizer's group")
            params += list(zip(saved["params"], mine["params"], strict=True))
            for key, value in saved.items():
                if key != "params":
                    mine[key] = tuple(value) if key == "betas" else value
        saved_state = state_dict["state"]
        self.state = {}
        for i, p in params:
            if i not in saved_state:
                continue
            s = saved_state[i]
            self.state[p] = {
                "step": torch.as_tensor(s["step"], dtype=_step_dtype()).clone(),
                "exp_avg": s["exp_avg"].to(dtype=p.dtype, device=p.device).clone(),
                "exp_avg_sq": s["exp_avg_sq"].to(dtype=p.dtype, device=p.device).clone(),
            }
