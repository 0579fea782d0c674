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
listed as skipped, as are checkpoint tensors outside the requested parts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from cmrbench.benchmark.nets import TRANSFERABLE_PARTS, SegNet


class TransferError(ValueError):
    """Pretrained weights that do not fit the requested part of a net."""


@dataclass
class PartReport:
    """What one part received: tensors (parameters and buffers) and parameter elements."""

    tensors_loaded: int = 0
    params_loaded: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class TransferReport:
    """Per-part counts and the checkpoint keys that were not loaded."""

    parts: dict[str, PartReport]
    skipped: list[str]

    def to_json(self) -> dict[str, Any]:
        """``{"parts": {part: {"tensors_loaded", "params_loaded", "skipped"}}, "skipped"}``."""
        return {"parts": {name: {"tensors_loaded": part.tensors_loaded,
                                 "params_loaded": part.params_loaded,
                                 "skipped": list(part.skipped)}
                          for name, part in self.parts.items()},
                "skipped": list(self.skipped)}


def transfer_weights(net: SegNet, state_dict: Mapping[str, torch.Tensor],
                     parts: tuple[str, ...]) -> TransferReport:
    """Copy the checkpoint tensors under ``{part}.`` into ``net`` for each requested part.

    ``params_loaded`` counts the elements of the loaded tensors that are parameters
    (buffers such as BatchNorm running statistics are loaded but not counted there).
    Raises `TransferError` when a part is unknown, matches no checkpoint key, lacks keys
    the net has, or has a shape mismatch; the net is left untouched in that case.
    """
    unknown = [p for p in parts if p not in TRANSFERABLE_PARTS]
    if unknown:
        raise TransferError(f"cannot transfer part(s) {unknown}; transferable parts are "
                            f"{list(TRANSFERABLE_PARTS)}")
    targets = net.state_dict(keep_vars=True)
    param_names = {name for name, _ in net.named_parameters()}
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    report = TransferReport(parts={}, skipped=[])
    for part in parts:
        prefix = f"{part}."
        wanted = [k for k in targets if k.startswith(prefix)]
        offered = [k for k in state_dict if k.startswith(prefix)]
        _check_part(part, wanted, offered, targets, state_dict)
        part_report = PartReport(skipped=sorted(set(offered) - set(wanted)))
        for key in wanted:
            plan.append((targets[key], state_dict[key]))
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


def _check_part(part: str, wanted: list[str], offered: list[str],
                targets: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise `TransferError` unless every net tensor of ``part`` has a same-shaped source."""
    if not offered:
        sample = sorted(state_dict)[:8]
        raise TransferError(f"part {part!r} matched no key of the checkpoint (no key starts "
                            f"with '{part}.'); checkpoint keys include {sample}")
    missing = [k for k in wanted if k not in state_dict]
    if missing:
        raise TransferError(f"part {part!r} is incomplete in the checkpoint: the net's keys "
                            f"{missing} are missing")
    mismatched = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs net {tuple(targets[k].shape)}"
                  for k in wanted if state_dict[k].shape != targets[k].shape]
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
