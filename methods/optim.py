"""Adam without torch.optim, for SDFT's per-episode step 2.

torch.optim's first optimizer imports torch._dynamo, seconds of a warm `bench run --method sdft` that needs
nothing else of it (docs/method-notes.md). This is torch.optim.Adam's own
CPU path with its defaults (single-tensor update; betas 0.9 and 0.999, eps 1e-8, no weight decay, amsgrad or
maximize), operation for operation, so its parameters are the same bits step for step
(tests/test_optim.py checks it against torch.optim.Adam).
"""

from __future__ import annotations

import torch


class Adam:
    """Adam(param_groups) where each group is {"params": ..., "lr": ...}, as torch.optim.Adam takes them."""

    def __init__(self, param_groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.groups = [(list(group["params"]), float(group["lr"])) for group in param_groups]
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.state: dict[torch.Tensor, list] = {}  # param -> [step, exp_avg, exp_avg_sq]

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.beta1, self.beta2
        for params, lr in self.groups:
            for p in params:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, [0.0, torch.zeros_like(p), torch.zeros_like(p)])
                state[0] += 1.0  # torch keeps it in a float32 tensor and reads it back with .item()
                step, exp_avg, exp_avg_sq = state
                exp_avg.lerp_(p.grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                step_size = lr / (1 - beta1**step)
                denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)
