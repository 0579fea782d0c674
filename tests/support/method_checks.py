"""Shared pieces of the SSP-method tests: structured toy slices and a tiny pretraining loop.

The loop takes the harness's step (`cmrbench.optim.optimizer_step`: backward,
``before_optimizer_step``, the optimizer's step, ``after_step``) with the method's own
optimizer at a constant learning rate; the schedule belongs to the harness and is tested
there.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from cmrbench.methods.base import PretrainBatch, SSPMethod, Step
from cmrbench.nets import create_net
from cmrbench.optim import build_optimizer, optimizer_step
from cmrbench.transforms.augment import BatchAugment

IMAGE_SIZE = 32


def blob_slices(n: int, size: int = IMAGE_SIZE, seed: int = 0) -> PretrainBatch:
    """``n`` z-scored toy short-axis slices ``(n, 1, size, size)`` with random positions.

    Each image is a bright disc with a darker core (a ventricle and its wall) whose radius
    shrinks from base (position 0) to apex (position 1), placed at a random centre, plus a
    Gaussian blob of random brightness elsewhere and faint noise. Position is thus visible
    in the image, as in real stacks, so PCL has something to learn.
    """
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    position = torch.rand(n, generator=gen)
    images = 0.05 * torch.randn(n, 1, size, size, generator=gen)
    for i in range(n):
        cy, cx = 0.35 + 0.3 * torch.rand(2, generator=gen)
        radius = 0.3 - 0.2 * position[i]
        dist = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        wall, cavity = (
            torch.sigmoid((radius - dist) / 0.02),
            torch.sigmoid((0.6 * radius - dist) / 0.02),
        )
        images[i, 0] += wall - 0.5 * cavity
        by, bx, brightness = torch.rand(3, generator=gen)
        blob = torch.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * 0.06**2))
        images[i, 0] += (0.3 + 0.5 * brightness) * blob
    images = (images - images.mean(dim=(1, 2, 3), keepdim=True)) / images.std(
        dim=(1, 2, 3), keepdim=True
    )
    return PretrainBatch(
        images=images,
        position=position,
        subject=torch.randint(8, (n,), generator=gen),
        frame=torch.randint(25, (n,), generator=gen),
    )


def build_method(
    cls: type[SSPMethod], seed: int = 0, net: str = "unet2d_xs", **hparams: object
) -> SSPMethod:
    """``cls`` on a fresh small net at `IMAGE_SIZE` with the paper augmentation."""
    torch.manual_seed(seed)
    return cls(
        create_net(net, **cls.net_kwargs), IMAGE_SIZE, BatchAugment("paper", IMAGE_SIZE), **hparams
    )


def make_step(
    index: int = 0, total: int = 1, steps_per_epoch: int = 1, seed: int | None = None
) -> Step:
    """The `Step` ``index`` of a run of ``total`` steps, its generator seeded with ``seed``
    (``index`` when None)."""
    return Step(
        index=index,
        total=total,
        epoch=index // steps_per_epoch,
        total_epochs=math.ceil(total / steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        generator=torch.Generator().manual_seed(index if seed is None else seed),
    )


def subset(pool: PretrainBatch, idx: torch.Tensor) -> PretrainBatch:
    """Rows ``idx`` of ``pool``."""
    return PretrainBatch(pool.images[idx], pool.position[idx], pool.subject[idx], pool.frame[idx])


def short_pretraining_losses(
    method: SSPMethod,
    pool: PretrainBatch,
    steps: int = 30,
    batch_size: int = 16,
    steps_per_epoch: int = 5,
    seed: int = 0,
) -> list[float]:
    """Losses of ``steps`` pretraining steps of ``method`` on batches drawn from ``pool``."""
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, method.optim, torch.device("cpu"))
    order = torch.Generator().manual_seed(seed)
    method.train()
    losses = []
    for index in range(steps):
        step = make_step(index, steps, steps_per_epoch, seed=seed * 100_003 + index)
        batch = subset(pool, torch.randperm(len(pool.images), generator=order)[:batch_size])
        loss = method.loss(batch, step)
        optimizer_step(
            optimizer,
            loss,
            before_step=partial(method.before_optimizer_step, step),
            after_step=partial(method.after_step, step),
        )
        losses.append(loss.item())
    return losses


def first_and_last_mean(losses: list[float], k: int = 5) -> tuple[float, float]:
    """Mean of the first ``k`` and of the last ``k`` losses."""
    return sum(losses[:k]) / k, sum(losses[-k:]) / k
