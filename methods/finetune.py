"""Full fine-tuning: the ImageNet backbone (all layers trainable) plus a new linear head, on the support images.

The plain transfer-learning baseline: per episode the backbone is reset to its ImageNet weights (a CPU copy of
the initial state dict is loaded, so no episode sees another's updates), a linear head is drawn with the
episode's generator (N(0, 0.01), zero bias), and `steps` full-batch Adam steps are taken on the support
images, each under a fresh random dihedral augmentation (flips and 90-degree rotations: orbital images have no
canonical "up"). Batch norm keeps its ImageNet statistics while fine-tuning (the model runs in eval mode;
its affine parameters still train): with 5 to 100 support images, training-mode batch norm normalises with
batch statistics that the eval-mode prediction then replaces by running averages, and on the generated test
task this mismatch alone (at lr 0) drops accuracy to chance. `freeze_bn=False` gives the textbook variant.
The query is predicted with model.eval() under torch.inference_mode, in batches.

Defaults: 15 steps, backbone lr 1e-4 ("low"), head lr 1e-3. Cost grows linearly with shots x steps: a 5-way
5-shot episode trains on 15 x 25 = 375 image passes (docs/methods-reference.md has measured times per K).

Every step's support batch is split into fixed micro-batches (at most MICRO_BATCH images, an even count of
them) whose gradients are computed side by side on the cores and added in order (methods/parallel.py): the
same bits on any number of cores, and at most MICRO_BATCH images' activations per core in memory. With frozen
batch norm the images are independent, so the split changes only the order of the additions. Batch statistics
(freeze_bn=False) need the whole support set in one pass, on one core. The query is predicted in
micro-batches of at most `batch_size` images, side by side as well.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from methods.augment import dihedral
from methods.backbones import create_backbone, normalize
from methods.base import Context, FewShotMethod, torch_generator
from methods.devices import to_numpy
from methods.optim import Adam
from methods.parallel import Workers, micro_batches, parallel_backward
from methods.registry import register_method

MICRO_BATCH = 8  # support images per micro-batch: 1-shot 5-way is 2 of them (3 + 2), 5-shot 4, 20-shot 14


@register_method("finetune")
class FineTune(FewShotMethod):
    description = "Full fine-tuning of the ImageNet backbone + linear head on the support images (Adam, flips/rot90)"
    consumes = "images"
    version = 2  # 2: support passes and predictions in fixed micro-batches, side by side (methods/parallel.py)

    def __init__(
        self,
        steps: int = 15,
        lr: float = 1e-4,
        head_lr: float = 1e-3,
        augment: bool = True,
        freeze_bn: bool = True,
        batch_size: int = 64,
    ):
        if int(steps) < 0 or float(lr) < 0 or float(head_lr) <= 0 or int(batch_size) < 1:
            raise ValueError("steps and lr must be >= 0, head_lr and batch_size positive")
        self.steps, self.lr, self.head_lr = int(steps), float(lr), float(head_lr)
        self.augment, self.freeze_bn, self.batch_size = bool(augment), bool(freeze_bn), int(batch_size)

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        self.images = ctx.images()
        self.model = create_backbone(ctx.backbone, pretrained=True)
        self.model.reset_classifier(0)  # pooled features; the head is separate and new per episode
        self.initial_state = copy.deepcopy(self.model.state_dict())  # on the CPU; loading it copies to the device
        self.device = ctx.device
        self.model.to(ctx.device)

    def fit(self, support_idx, support_y, n_way, rng):
        gen = torch_generator(rng)
        self.model.load_state_dict(self.initial_state)
        self.head = nn.Linear(self.model.num_features, n_way).to(self.device)
        with torch.no_grad():  # drawn on the CPU generator: the same head on any device
            self.head.weight.copy_(0.01 * torch.randn(self.head.weight.shape, generator=gen))
            self.head.bias.zero_()
        x = torch.from_numpy(self.images[np.asarray(support_idx)]).to(self.device)  # uint8, sent once
        y = torch.as_tensor(support_y, dtype=torch.long, device=self.device)
        # torch.optim.Adam's arithmetic without importing torch._dynamo (methods/optim.py)
        opt = Adam(
            [{"params": self.model.parameters(), "lr": self.lr}, {"params": self.head.parameters(), "lr": self.head_lr}]
        )
        params = [*self.model.parameters(), *self.head.parameters()]
        self.model.train(not self.freeze_bn and len(x) > 1)  # batch norm needs two samples to train
        parts = [slice(0, len(x))] if self.model.training else micro_batches(len(x), MICRO_BATCH, even=True)
        with Workers(device=self.device) as workers:
            for _ in range(self.steps):
                batch = dihedral(x, gen) if self.augment else x
                parallel_backward(
                    workers,
                    params,
                    len(parts),
                    lambda i, batch=batch: self.part_loss(batch[parts[i]], y[parts[i]], len(x)),
                )
                opt.step()
        self.model.eval()

    def part_loss(self, images: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
        """A micro-batch's share of the support's mean cross-entropy (its summed loss over the support size)."""
        return F.cross_entropy(self.head(self.model(normalize(images))), y, reduction="sum") / n

    def predict(self, query_idx):
        self.model.eval()
        idx = np.asarray(query_idx)

        def scores(rows: slice) -> torch.Tensor:
            with torch.inference_mode():  # per thread: each worker sets its own
                batch = torch.from_numpy(self.images[idx[rows]]).to(self.device)
                return self.head(self.model(normalize(batch)))

        with Workers(device=self.device) as workers:
            out = workers.map(scores, micro_batches(len(idx), self.batch_size, even=True))
        return to_numpy(torch.cat(out).float())
