"""MAML (Finn et al. 2017) of a classifier head on frozen ImageNet features (torch.func.functional_call).

What is meta-learned is the *initialisation of a head* (linear by default, `hidden>0` gives a one-hidden-layer
MLP) over frozen backbone features, not the whole network: full-network MAML back-propagates through several
inner SGD steps of a 3.4M-parameter EfficientNet for every task of every meta-batch: at 25-55 training
images/s on the 2 CPU cores this benchmark targets, about a minute per meta-step and most of a day per thousand.
Over cached features a meta-step costs 15-100 ms (500 meta-steps: 7 s to a minute, once per task and seed),
so the method is "MAML head on frozen features", and its description says so.

prepare: features are standardised with the base pool's mean and standard deviation (never episode
statistics) and divided by sqrt(D), so inputs have unit norm on average and one inner learning rate suits any
backbone. The head's initialisation is meta-trained on N-way K-shot episodes drawn from the task's base pool
(scene-disjoint support/query, explicit generator): per task, `inner_steps` SGD steps on the support set
(torch.autograd.grad, differentiable), then the query loss of the adapted head; the outer optimiser is Adam on
the mean query loss over `meta_batch` tasks, whose gradients are computed side by side on the cores and added
in task order (methods/parallel.py: the same bits on any number of cores). `first_order=True` drops the
second-order terms (FOMAML). The result is cached with ctx.cache.state_dict, keyed by the task, backbone,
weights, image size, options and seed.

fit: the head starts from the meta-learned initialisation and takes `test_steps` SGD steps on the support set.

`tied=True` (default) meta-learns a single output row (weight and bias) shared by every class, as
UNICORN-MAML does (Ye & Chao, ICLR 2022): episode classes land on output units in arbitrary order, so a
per-unit initialisation can only learn noise, and any N works at test time (docs/method-notes.md compares
tied, untied and no meta-training).
With `tied=False`, an episode with more classes than `train_way` reuses units cyclically (unit c % train_way).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from common.errors import UserError
from methods.base import Context, FeatureMethod, torch_generator
from methods.cache import cache_key
from methods.parallel import Workers, parallel_backward
from methods.registry import register_method
from tasks.episodes import PoolIndex, sample_episode

# Keys meta-trained initialisations: 2: the meta-batch's tasks side by side (methods/parallel.py), their
# gradients added in task order
MAML_VERSION = 2


def make_head(dim: int, n_out: int, hidden: int) -> nn.Module:
    if hidden > 0:
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_out))
    return nn.Linear(dim, n_out)


def adapt(
    head: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, first_order: bool = False
) -> dict:
    """`steps` SGD steps of the cross-entropy on (x, y) from `params`; differentiable unless first_order (the
    steps' gradients are then constants, FOMAML). Plain autograd, not torch.func.grad: torch.func's transforms
    keep state that two threads must not share, and meta-training runs tasks on worker threads."""
    for _ in range(steps):
        with torch.enable_grad():
            inputs = {
                k: v.detach().requires_grad_(True) if first_order or not v.requires_grad else v
                for k, v in params.items()
            }
            loss = F.cross_entropy(functional_call(head, inputs, (x,)), y)
            grads = torch.autograd.grad(loss, list(inputs.values()), create_graph=not first_order)
        params = {k: params[k] - lr * g for k, g in zip(inputs, grads)}
    return params


def last_layer(params: dict) -> tuple[str, str]:
    names = [k for k in params if k.endswith("weight")]
    last = sorted(names)[-1]  # "weight" (linear) or "2.weight" (MLP)
    return last, last.replace("weight", "bias")


def expand_init(params: dict, n_way: int) -> dict:
    """The initial parameters for an n_way episode: output unit c starts from stored row c % rows (a tied
    head stores one row, shared by every class)."""
    weight, bias = last_layer(params)
    units = torch.arange(n_way, device=params[weight].device) % params[weight].shape[0]
    return {**params, weight: params[weight][units], bias: params[bias][units]}


def meta_train(
    head: nn.Module,
    x_all: torch.Tensor,
    index: PoolIndex,
    opts: dict,
    rng: np.random.Generator,
    log=lambda message: None,
) -> dict:
    """Meta-learn the head's initialisation on episodes of the base pool (`index`); returns its state dict."""
    eligible = index.eligible(opts["train_shots"], opts["train_queries"])
    n_way = opts["train_way"]
    if len(eligible) < n_way:
        raise UserError(
            f"maml: the base pool has only {len(eligible)} classes with {opts['train_shots']}+"
            f"{opts['train_queries']} scene-disjoint images; lower train_way, train_shots or train_queries"
        )
    params = {k: v.detach().clone() for k, v in head.named_parameters()}
    if opts["tied"]:
        weight, bias = last_layer(params)
        params[weight], params[bias] = params[weight][:1], params[bias][:1]
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(params.values(), lr=opts["meta_lr"])

    device = x_all.device  # the head's parameters are there too; each episode's indices and labels go there
    # functional_call puts the parameters into the module while it runs: each task of a meta-batch gets a copy
    heads = [copy.deepcopy(head) for _ in range(opts["meta_batch"])]

    def task_loss(p, ep, head):
        s_idx, s_y, q_idx, q_y = (
            torch.from_numpy(a).to(device) for a in (ep.support_idx, ep.support_y, ep.query_idx, ep.query_y)
        )
        adapted = adapt(
            head, expand_init(p, n_way), x_all[s_idx], s_y, opts["inner_steps"], opts["inner_lr"], opts["first_order"]
        )
        return F.cross_entropy(functional_call(head, adapted, (x_all[q_idx],)), q_y)

    with Workers(device=device) as workers:  # each task of a meta-batch on a core of its own
        for step in range(opts["meta_steps"]):
            episodes = [
                sample_episode(index, n_way, opts["train_shots"], opts["train_queries"], rng, eligible)
                for _ in range(opts["meta_batch"])
            ]
            loss = parallel_backward(
                workers,
                list(params.values()),
                len(episodes),
                lambda i, eps=episodes: task_loss(params, eps[i], heads[i]) / len(eps),
            )
            opt.step()
            if (step + 1) % max(1, opts["meta_steps"] // 5) == 0:
                log(f"maml: meta-step {step + 1}/{opts['meta_steps']} query loss {loss:.3f}")
    return {k: v.detach().clone() for k, v in params.items()}


@register_method("maml")
class MAML(FeatureMethod):
    description = "MAML of a linear head (hidden>0: MLP) on frozen ImageNet features, torch.func; not full-network MAML"
    version = 2  # MAML_VERSION's meta-training

    def __init__(
        self,
        meta_steps: int = 500,
        meta_batch: int = 4,
        meta_lr: float = 1e-3,
        inner_steps: int = 5,
        inner_lr: float = 0.5,
        test_steps: int = 10,
        first_order: bool = False,
        hidden: int = 0,
        train_way: int = 5,
        train_shots: int = 5,
        train_queries: int = 10,
        tied: bool = True,
    ):
        self.opts = dict(
            meta_steps=int(meta_steps),
            meta_batch=int(meta_batch),
            meta_lr=float(meta_lr),
            inner_steps=int(inner_steps),
            inner_lr=float(inner_lr),
            test_steps=int(test_steps),
            first_order=bool(first_order),
            hidden=int(hidden),
            train_way=int(train_way),
            train_shots=int(train_shots),
            train_queries=int(train_queries),
            tied=bool(tied),
        )
        positive = ("meta_steps", "meta_batch", "train_shots", "train_queries")
        if (
            any(self.opts[k] < 1 for k in positive)
            or self.opts["train_way"] < 2
            or self.opts["hidden"] < 0
            or min(self.opts["inner_steps"], self.opts["test_steps"]) < 0
            or min(self.opts["meta_lr"], self.opts["inner_lr"]) <= 0
        ):
            raise ValueError(f"out-of-range option in {self.opts}")

    def cache_key(self, ctx: Context) -> str:
        meta = {k: v for k, v in self.opts.items() if k != "test_steps"}  # test_steps does not change training
        return cache_key("maml", MAML_VERSION, ctx.task_key, ctx.features_key(), meta, ctx.seed)

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        base_idx, _ = ctx.base_pool()
        base = self.features[torch.as_tensor(base_idx, device=ctx.device)]
        mean, std = base.mean(0), base.std(0).clamp_min(1e-6)
        self.features = (self.features - mean) / std / self.features.shape[1] ** 0.5
        dim = self.features.shape[1]
        key = self.cache_key(ctx)
        self.head = make_head(dim, self.opts["train_way"], self.opts["hidden"])

        def compute():
            rng = np.random.default_rng([ctx.seed, 4242])
            with torch.no_grad():  # reproducible initial weights (nn.Linear's default init uses global state)
                gen = torch_generator(rng)
                for p in self.head.parameters():
                    bound = 1 / p.shape[-1] ** 0.5 if p.ndim == 2 else 0.0
                    p.uniform_(-bound, bound, generator=gen) if bound else p.zero_()
            self.head.to(ctx.device)  # initialised on the CPU, where `gen` draws
            ctx.progress.log(f"maml: meta-training the head on base-pool episodes (cached as {key})")
            state = meta_train(self.head, self.features, ctx.base_episodes(), self.opts, rng, ctx.progress.log)
            return {k: v.cpu() for k, v in state.items()}

        init, self.cached = ctx.cache.state_dict("maml", key, compute)
        self.head.to(ctx.device)
        self.init = {k: v.to(ctx.device) for k, v in init.items()}
        if self.cached:
            ctx.progress.log(f"maml: cache hit ({key}), skipping meta-training")

    def fit_features(self, x, y, n_way, rng):
        params = expand_init(self.init, n_way)
        with torch.enable_grad():
            self.params = {
                k: v.detach()
                for k, v in adapt(self.head, params, x, y, self.opts["test_steps"], self.opts["inner_lr"], True).items()
            }

    def predict_features(self, x):
        return functional_call(self.head, self.params, (x,))
