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
5-shot episode trains on 15 x 25 = 375 image passes (docs/method-notes.md has measured times).
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
from methods.registry import register_method

TRAIN_CHUNK = 25  # support images per forward-backward pass when batch norm is frozen (5-way 5-shot: one pass)


@register_method("finetune")
class FineTune(FewShotMethod):
    description = "Full fine-tuning of the ImageNet backbone + linear head on the support images (Adam, flips/rot90)"
    consumes = "images"

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
        opt = torch.optim.Adam(
            [{"params": self.model.parameters(), "lr": self.lr}, {"params": self.head.parameters(), "lr": self.head_lr}]
        )
        self.model.train(not self.freeze_bn and len(x) > 1)  # batch norm needs two samples to train
        for _ in range(self.steps):
            batch = dihedral(x, gen) if self.augment else x
            opt.zero_grad()
            self.backward(batch, y)
            opt.step()
        self.model.eval()

    def backward(self, batch: torch.Tensor, y: torch.Tensor) -> None:
        """Gradients of the mean cross-entropy over the support images. With frozen batch norm the images are
        independent, so more than TRAIN_CHUNK of them go through in chunks whose summed losses, divided by the
        support size, add up to the same gradient (up to float rounding): at 20 shots, one 100-image pass held
        3.9 GiB at its peak. Batch statistics (freeze_bn=False) need the whole support set in one pass."""
        if self.model.training or len(batch) <= TRAIN_CHUNK:
            F.cross_entropy(self.head(self.model(normalize(batch))), y).backward()
            return
        for start in range(0, len(batch), TRAIN_CHUNK):
            part = slice(start, start + TRAIN_CHUNK)
            loss = F.cross_entropy(self.head(self.model(normalize(batch[part]))), y[part], reduction="sum")
            (loss / len(batch)).backward()

    def predict(self, query_idx):
        self.model.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(query_idx), self.batch_size):
                batch = torch.from_numpy(self.images[np.asarray(query_idx[start : start + self.batch_size])])
                out.append(self.head(self.model(normalize(batch.to(self.device)))))
        return to_numpy(torch.cat(out).float())
