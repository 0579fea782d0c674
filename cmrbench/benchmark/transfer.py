"""Seed a fine-tuning net with pretrained weights, part by part, and say what was loaded.

A pretraining checkpoint is a `SegNet` state dict (``encoder.*``, ``decoder.*``,
``head.*``). A method declares which parts its weights seed (`SSPMethod.transfers`:
``("encoder",)`` for SimCLR, PCL and DINO; ``("encoder", "decoder")`` for MIM); the
output head is never transferred, since its classes differ between pretraining and
fine-tuning. BatchNorm running statistics are buffers under the same prefixes and move
with their part.

A requested part must load completely: every tensor of that part of the net must find a
tensor of the same name and shape in the checkpoint, otherwise `TransferError` names the
part and the keys. Checkpoint tensors of a requested part that the net does not have are
listed as skipped, as are checkpoint tensors outside the requested parts. Only an external
checkpoint declared with ``strict: false`` (`cmrbench.benchmark.checkpoints`) loads a part
partially: the net tensors it cannot fill keep their random initialisation and are listed
as ``random``. Tensors the caller adapted before the transfer (an external ViT's position
embedding resampled to the patch grid, its patch projection summed over input channels)
are listed as ``adapted`` with how, the others as ``loaded``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cmrbench.errors import CmrbenchError
from cmrbench.nets import TRANSFERABLE_PARTS, SegNet


class TransferError(CmrbenchError, ValueError):
    """Pretrained weights that do not fit the requested part of a net."""


@dataclass
class PartReport:
    """What one part received: tensors (parameters and buffers) and parameter elements.

    ``loaded`` net keys were copied as they are, ``adapted`` ones (key → how) were changed
    to fit first, ``random`` ones kept their initialisation (partial loads only);
    ``tensors_loaded`` counts the first two.
    """

    tensors_loaded: int = 0
    params_loaded: int = 0
    skipped: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    random: list[str] = field(default_factory=list)


@dataclass
class TransferReport:
    """Per-part counts and the checkpoint keys that were not loaded."""

    parts: dict[str, PartReport]
    skipped: list[str]

    def to_json(self) -> dict[str, Any]:
        """``{"parts": {part: {"tensors_loaded", "params_loaded", "skipped", "loaded",
        "adapted", "random"}}, "skipped"}``."""
        return {
            "parts": {
                name: {
                    "tensors_loaded": part.tensors_loaded,
                    "params_loaded": part.params_loaded,
                    "skipped": list(part.skipped),
                    "loaded": list(part.loaded),
                    "adapted": dict(part.adapted),
                    "random": list(part.random),
                }
                for name, part in self.parts.items()
            },
            "skipped": list(self.skipped),
        }


def transfer_weights(
    net: SegNet,
    state_dict: Mapping[str, torch.Tensor],
    parts: tuple[str, ...],
    strict: bool = True,
    adapted: Mapping[str, str] | None = None,
) -> TransferReport:
    """Copy the checkpoint tensors under ``{part}.`` into ``net`` for each requested part.

    ``params_loaded`` counts the elements of the loaded tensors that are parameters
    (buffers such as BatchNorm running statistics are loaded but not counted there).
    ``adapted`` names the checkpoint keys the caller adapted (key → how) for the report.
    Raises `TransferError` when a part is unknown or matches no checkpoint key, and, when
    ``strict``, when it lacks keys the net has or has a shape mismatch; the net is left
    untouched in that case. Not ``strict``: such net tensors stay as they are (``random``)
    and the unusable checkpoint tensors are listed as skipped.
    """
    unknown = [p for p in parts if p not in TRANSFERABLE_PARTS]
    if unknown:
        raise TransferError(
            f"cannot transfer part(s) {unknown}; transferable parts are {list(TRANSFERABLE_PARTS)}"
        )
    targets = net.state_dict(keep_vars=True)
    param_names = {name for name, _ in net.named_parameters()}
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    report = TransferReport(parts={}, skipped=[])
    for part in parts:
        prefix = f"{part}."
        wanted = [k for k in targets if k.startswith(prefix)]
        offered = [k for k in state_dict if k.startswith(prefix)]
        _check_part(part, wanted, offered, targets, state_dict, strict)
        fitting = [k for k in wanted if k in state_dict and state_dict[k].shape == targets[k].shape]
        part_report = PartReport(
            skipped=sorted(set(offered) - set(fitting)),
            random=[k for k in wanted if k not in fitting],
        )
        for key in fitting:
            plan.append((targets[key], state_dict[key]))
            if adapted and key in adapted:
                part_report.adapted[key] = adapted[key]
            else:
                part_report.loaded.append(key)
            part_report.tensors_loaded += 1
            if key in param_names:
                part_report.params_loaded += targets[key].numel()
        report.parts[part] = part_report
    requested = tuple(f"{part}." for part in parts)
    report.skipped = sorted(k for k in state_dict if not k.startswith(requested))
    with torch.no_grad():
        for target, source in plan:
            target.copy_(source)
    return report


def _check_part(
    part: str,
    wanted: list[str],
    offered: list[str],
    targets: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    strict: bool,
) -> None:
    """Raise `TransferError` if ``part`` matches no checkpoint key or, when ``strict``,
    unless every net tensor of ``part`` has a same-shaped source."""
    if not offered:
        sample = sorted(state_dict)[:8]
        raise TransferError(
            f"part {part!r} matched no key of the checkpoint (no key starts "
            f"with '{part}.'); checkpoint keys include {sample}"
        )
    if not strict:
        return
    missing = [k for k in wanted if k not in state_dict]
    if missing:
        raise TransferError(
            f"part {part!r} is incomplete in the checkpoint: the net's keys {missing} are missing"
        )
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs net {tuple(targets[k].shape)}"
        for k in wanted
        if state_dict[k].shape != targets[k].shape
    ]
    if mismatched:
        raise TransferError(f"part {part!r} has shape mismatches: {mismatched}")


def state_dict_sha256(weights: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor (name, dtype, shape, bytes) in name order.

    Accepts a module or a state dict; equal weights give equal hashes on any device.
    """
    tensors = weights.state_dict() if isinstance(weights, nn.Module) else weights
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
