"""Transferred MIM weights arrive in the fine-tuning net and change what it learns from.

A tiny version of the default `smoke` design: `mim` pretrains a few steps on a small
phantom pool, then the fine-tuning net of a `scratch`, a `mim` (encoder + decoder) and a
`mim_enc` (encoder only) cell is built as `cmrbench run` builds it, and each runs its first
fine-tuning epoch on the same batches.
"""

from __future__ import annotations

import torch
import yaml

from cmrbench.benchmark.data import labelled_slices, open_data
from cmrbench.benchmark.grid import parse_grid, plan_grid
from cmrbench.benchmark.runner import RunOptions, build_finetune_net, load_pretrained
from cmrbench.benchmark.spec import CellSpec
from cmrbench.benchmark.train import finetune
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.nets import SegNet, create_net
from cmrbench.store import JsonlLog
from cmrbench.transforms.augment import BatchAugment
from support.cli import TINY_GRID

CPU = torch.device("cpu")
ON_CPU = RunOptions(devices=("cpu",), progress=False)


def tiny_mim_cells() -> dict[str, CellSpec]:
    """The tiny grid with scratch, mim and mim_enc at budget 1, and a few pretraining steps."""
    raw = yaml.safe_load(TINY_GRID.read_text())
    raw.update(
        methods=["scratch", "mim", "mim_enc"],
        budgets=[1],
        pretrain={"epochs": 0.1, "batch_size": 16},
    )
    cells = plan_grid(parse_grid(raw, str(TINY_GRID))).cells
    return {cell.method: cell for cell in cells}


def first_epoch_loss(net: SegNet, cell: CellSpec, log_dir) -> float:
    """Mean training loss of ``net``'s first fine-tuning epoch of ``cell`` (its batches,
    augmentation draws and optimiser), a fresh log each time."""
    ctx = open_data(cell.data, show_progress=False)
    setting = Setting(cell.setting)
    who = cell_subjects(ctx.adapter, cell.budget, cell.seed, setting)
    train = labelled_slices(ctx.cache, who.labelled, setting.train_phases, CPU)
    log = JsonlLog(log_dir / f"{cell.method}-{len(list(log_dir.iterdir()))}.jsonl")
    losses = finetune(
        net,
        train,
        None,
        epochs=1,
        batch_size=cell.finetune.batch_size,
        optim=cell.finetune.optim,
        augment=BatchAugment(cell.augmentation, cell.data.image_size),
        seed=cell.seed,
        device=CPU,
        log=log,
        show_progress=False,
    )
    assert len(log.records()) == 1  # one epoch is fewer steps than a log window
    return losses["train_loss_final"]


def hand_loaded_net(
    cell: CellSpec, checkpoint: dict[str, torch.Tensor], parts: tuple[str, ...]
) -> SegNet:
    """The cell's seeded random init with the checkpoint's ``parts`` copied in by name."""
    torch.manual_seed(cell.seed)
    net = create_net(cell.encoder, img_size=cell.data.image_size)
    state = net.state_dict()
    state.update({k: v for k, v in checkpoint.items() if k.split(".")[0] in parts})
    net.load_state_dict(state)
    return net


def test_transferred_mim_weights_change_the_first_epoch_loss_exactly_as_hand_loaded_weights(
    tmp_path, cmrbench_env
):
    cells = tiny_mim_cells()
    checkpoint = load_pretrained(tmp_path / "run", cells["mim"].pretrain, ON_CPU)
    logs = tmp_path / "logs"
    logs.mkdir()
    built = {
        method: first_epoch_loss(build_finetune_net(tmp_path / "run", cell, ON_CPU)[0], cell, logs)
        for method, cell in cells.items()
    }
    by_hand = {
        "scratch": first_epoch_loss(
            hand_loaded_net(cells["scratch"], checkpoint, ()), cells["scratch"], logs
        ),
        "mim": first_epoch_loss(
            hand_loaded_net(cells["mim"], checkpoint, ("encoder", "decoder")), cells["mim"], logs
        ),
        "mim_enc": first_epoch_loss(
            hand_loaded_net(cells["mim_enc"], checkpoint, ("encoder",)), cells["mim_enc"], logs
        ),
    }
    assert built == by_hand
    for pretrained in ("mim", "mim_enc"):
        assert abs(built[pretrained] - built["scratch"]) > 1e-3 * built["scratch"]
    assert abs(built["mim"] - built["mim_enc"]) > 1e-3 * built["scratch"]  # the decoder is used too
