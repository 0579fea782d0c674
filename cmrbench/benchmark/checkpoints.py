"""External pretrained checkpoints: read a weight file safely and seed a fine-tuning net.

A grid's ``checkpoints`` section (or ``cmrbench run --checkpoint``) declares weight files
by name; each becomes a leaderboard row like a method, fine-tuned by the same harness
(`CheckpointSpec`). Two formats:

- ``cmrbench``: a pretraining job's ``checkpoint.pt`` from any run folder (``{"net":
  SegNet state dict}``). The job's ``spec.json`` beside it, when present, supplies the
  encoder and the parts its method transfers (`SSPMethod.transfers`).
- ``timm``: a timm Vision Transformer state dict (``timm.create_model(...).state_dict()``),
  bare or under an MAE-style ``model`` (or ``state_dict``) key, its keys optionally
  prefixed by ``module.``, ``model.`` or ``encoder.``. It seeds the encoder of a ViT net.
  What differs is adapted with timm's own helpers, as timm does when it loads pretrained
  weights: the patch projection to one input channel (`adapt_input_conv`: a sum over
  the RGB channels), the absolute position embedding to the grid's patch grid
  (`resample_abs_pos_embed`, bicubic). The nets here have no class token, so the class
  token and its position-embedding entry are dropped, as are the classifier (``head``,
  ``fc_norm``) and an MAE checkpoint's pretraining decoder (``decoder_*``, ``mask_token``).

Any other tensor that maps to nothing in the net, and any net tensor of the seeded parts
that the file cannot fill, is a `CheckpointError` naming the file and the keys, unless
the checkpoint is declared with ``strict: false``; the transfer report (``transfer.json``)
then lists what stayed random. Files are read with ``torch.load(..., weights_only=True)``:
a pickle that needs code to load is refused with a message saying how to re-save it.
Every check runs when the grid is planned, so a bad file fails before any training.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models._manipulate import adapt_input_conv

from cmrbench.benchmark.spec import CheckpointSpec
from cmrbench.benchmark.transfer import TransferError, TransferReport, transfer_weights
from cmrbench.errors import CmrbenchError
from cmrbench.methods import get_method, list_methods
from cmrbench.nets import SegNet, create_net, list_nets

FORMATS = ("cmrbench", "timm")
TIMM_PREFIXES = ("module.", "model.", "encoder.")
# timm / MAE tensors with no counterpart in a class-token-free segmentation encoder
TIMM_UNUSED = ("cls_token", "head.", "head_dist.", "fc_norm.", "decoder_", "mask_token")
TIMM_CONTAINERS = ("model", "state_dict")
RESAVE_HINT = (
    "load it once in the code that wrote it and save the weights alone, e.g. "
    "`torch.save(model.state_dict(), path)` (or `torch.save(checkpoint['model'], path)`)"
)


class CheckpointError(CmrbenchError, ValueError):
    """An external checkpoint that cannot be read or does not fit its net; the message
    names the file and the keys."""


@dataclass(frozen=True)
class MappedState:
    """A checkpoint's tensors under the net's names, and what was adapted or left out."""

    tensors: dict[str, torch.Tensor]
    origin: dict[str, str]  # net-side name → the name in the file
    adapted: dict[str, str]  # net-side name → how it was adapted
    unused: list[str]  # file names deliberately not transferred


def file_sha256(data: bytes) -> str:
    """SHA-256 hex digest of a file's bytes."""
    return hashlib.sha256(data).hexdigest()


def read_state_dict(path: Path, fmt: str, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint file ``path`` (its bytes ``data`` when already read).

    ``cmrbench``: the ``net`` entry. ``timm``: the file itself, or its ``model`` /
    ``state_dict`` entry. Raises `CheckpointError` for a pickle that needs code, a file
    torch cannot read, or a mapping without tensors.
    """
    data = path.read_bytes() if data is None else data
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if needed:
            raise CheckpointError(
                f"{path}: the checkpoint needs code to load ({needed.group(1)}), and cmrbench "
                f"reads checkpoints with torch.load(weights_only=True); {RESAVE_HINT}"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint torch.load can read") from None
    except (RuntimeError, EOFError) as exc:
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint torch.load can read ({exc})"
        ) from None
    containers = ("net",) if fmt == "cmrbench" else TIMM_CONTAINERS
    if isinstance(obj, dict) and not _is_state_dict(obj):
        inner = next((obj[k] for k in containers if isinstance(obj.get(k), dict)), None)
        obj = inner if inner is not None else obj
    if not isinstance(obj, dict) or not _is_state_dict(obj):
        found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: expected a state dict of tensors (format {fmt!r}: "
            f"the file itself or its {' / '.join(containers)} entry); found {found}"
        )
    return obj


def _is_state_dict(obj: dict[Any, Any]) -> bool:
    return bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def strip_prefixes(key: str) -> str:
    """``key`` without leading ``module.``, ``model.`` and ``encoder.`` wrappers."""
    while key.startswith(TIMM_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def map_to_net(state: Mapping[str, torch.Tensor], fmt: str, net: SegNet) -> MappedState:
    """``state`` renamed to ``net``'s keys (timm: under ``encoder.``) and adapted to fit."""
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unused: list[str] = []
    for key, tensor in state.items():
        name = key
        if fmt == "timm":
            bare = strip_prefixes(key)
            if bare.startswith(TIMM_UNUSED):
                unused.append(key)
                continue
            name = f"encoder.{bare}"
        tensors[name] = tensor
        origin[name] = key
    adapted = _adapt_vit(tensors, net) if net.family == "vit" else {}
    return MappedState(tensors=tensors, origin=origin, adapted=adapted, unused=sorted(unused))


def _adapt_vit(tensors: dict[str, torch.Tensor], net: SegNet) -> dict[str, str]:
    """Fit a ViT's patch projection and position embedding to ``net`` in place, as timm
    does for ``in_chans`` and image size; returns key → how for what changed."""
    targets = net.state_dict()
    adapted = {}
    for key, adapt in (
        ("encoder.patch_embed.proj.weight", _adapt_patch_projection),
        ("encoder.pos_embed", _adapt_pos_embed),
    ):
        if key in tensors and tensors[key].shape != targets[key].shape:
            fitted = adapt(tensors[key], targets[key].shape)
            if fitted is not None:
                tensors[key], adapted[key] = fitted
    return adapted


def _adapt_patch_projection(
    weight: torch.Tensor, target: torch.Size
) -> tuple[torch.Tensor, str] | None:
    """A ``(D, C, p, p)`` patch projection for the net's input channels (timm's
    `adapt_input_conv`: one channel sums the checkpoint's); None if more than C differs."""
    if weight.ndim != 4 or weight.shape[0] != target[0] or weight.shape[2:] != target[2:]:
        return None
    channels = weight.shape[1]
    how = "summed over" if target[1] == 1 else "repeated from"
    return (
        adapt_input_conv(target[1], weight, base_chans=channels),
        f"input channels {how} the checkpoint's {channels} (timm adapt_input_conv)",
    )


def _adapt_pos_embed(
    pos_embed: torch.Tensor, target: torch.Size
) -> tuple[torch.Tensor, str] | None:
    """A ``(1, N, D)`` position embedding resampled to the net's square patch grid of
    ``N'`` tokens (timm's `resample_abs_pos_embed`); prefix-token (class) positions, counted
    as what exceeds a square grid, are dropped since the nets have no class token."""
    if pos_embed.ndim != 3 or pos_embed.shape[2] != target[2]:
        return None
    side, target_side = math.isqrt(pos_embed.shape[1]), math.isqrt(target[1])
    prefix = pos_embed.shape[1] - side * side
    if target_side * target_side != target[1] or prefix > 2 * side:
        return None
    resampled = resample_abs_pos_embed(
        pos_embed, new_size=[target_side, target_side], num_prefix_tokens=prefix
    )[:, prefix:]
    dropped = f"; {prefix} prefix-token position(s) dropped" if prefix else ""
    return resampled, (
        f"resampled from a {side}x{side} to a {target_side}x{target_side} patch "
        f"grid (timm resample_abs_pos_embed, bicubic){dropped}"
    )


def load_checkpoint(net: SegNet, spec: CheckpointSpec) -> TransferReport:
    """Seed ``spec.parts`` of ``net`` from the checkpoint file; the transfer report.

    Raises `CheckpointError` (naming the file and the keys) when the file changed since
    it was planned, cannot be read, has tensors that map to nothing (``strict``), or
    cannot fill the parts (``strict``), or a shape does not fit.
    """
    path = Path(spec.path)
    where = f"{path} (checkpoint {spec.name!r}, format {spec.format})"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot read the file ({exc})") from None
    if file_sha256(data) != spec.sha256:
        raise CheckpointError(
            f"{where}: the file changed since the grid was planned (SHA-256 "
            f"{file_sha256(data)[:12]}, planned {spec.sha256[:12]}); plan again"
        )
    mapped = map_to_net(read_state_dict(path, spec.format, data), spec.format, net)
    targets = net.state_dict()
    requested = tuple(f"{part}." for part in spec.parts)
    unmatched = sorted(
        mapped.origin[k] for k in mapped.tensors if k.startswith(requested) and k not in targets
    )
    if spec.strict and unmatched:
        raise CheckpointError(
            f"{where}: {len(unmatched)} tensor(s) match no tensor of a "
            f"{spec.encoder} net: {unmatched}; declare strict: false to skip "
            f"them (the report lists them)"
        )
    try:
        report = transfer_weights(
            net, mapped.tensors, spec.parts, strict=spec.strict, adapted=mapped.adapted
        )
    except TransferError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    for part in report.parts.values():
        part.skipped = sorted(mapped.origin[k] for k in part.skipped)
    report.skipped = sorted([mapped.origin[k] for k in report.skipped] + mapped.unused)
    return report


def resolve_checkpoint(name: str, entry: Mapping[str, Any], image_size: int) -> CheckpointSpec:
    """The `CheckpointSpec` of a grid's ``checkpoints.<name>`` entry (``path`` absolute,
    ``format``, optional ``encoder``, ``strict``, ``parts``), test-loaded into a fresh net
    at ``image_size`` so that a bad file fails at planning."""
    path = Path(entry["path"])
    fmt = entry["format"]
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {name!r}: file {path} does not exist (relative paths "
            f"are resolved against the grid file's folder)"
        )
    job = _pretrain_job(path) if fmt == "cmrbench" else {}
    encoder = entry.get("encoder") or job.get("encoder")
    if not encoder:
        raise CheckpointError(
            f"{path}: checkpoint {name!r} needs an 'encoder' (one of "
            f"{', '.join(list_nets())}); only a cmrbench checkpoint with its "
            f"job's spec.json beside it names its own"
        )
    if encoder not in list_nets():
        raise CheckpointError(
            f"{path}: checkpoint {name!r}: unknown encoder {encoder!r}; "
            f"allowed: {', '.join(list_nets())}"
        )
    if job.get("encoder") and job["encoder"] != encoder:
        raise CheckpointError(
            f"{path}: checkpoint {name!r} declares encoder {encoder!r}, but "
            f"its pretraining job ({path.parent / 'spec.json'}) used "
            f"{job['encoder']!r}"
        )
    net = create_net(encoder, img_size=image_size)
    if fmt == "timm" and net.family != "vit":
        raise CheckpointError(
            f"{path}: checkpoint {name!r}: timm weights seed a ViT encoder, "
            f"but {encoder!r} is a {net.family} net"
        )
    parts = tuple(entry.get("parts") or _default_parts(fmt, job, net.family))
    if fmt == "timm" and parts != ("encoder",):
        raise CheckpointError(
            f"{path}: checkpoint {name!r}: timm weights seed only the encoder, not {list(parts)}"
        )
    spec = CheckpointSpec(
        name=name,
        path=str(path),
        sha256=file_sha256(path.read_bytes()),
        format=fmt,
        encoder=encoder,
        strict=bool(entry.get("strict", True)),
        parts=parts,
    )
    load_checkpoint(net, spec)
    return spec


def _pretrain_job(path: Path) -> dict[str, Any]:
    """The pretraining job's ``spec.json`` beside a cmrbench checkpoint ({} if none)."""
    spec_file = path.parent / "spec.json"
    return json.loads(spec_file.read_text()) if spec_file.is_file() else {}


def _default_parts(fmt: str, job: Mapping[str, Any], family: str) -> tuple[str, ...]:
    """What a checkpoint seeds unless declared: its job's method's parts, else the encoder."""
    if fmt == "cmrbench" and job.get("method") in list_methods():
        return get_method(job["method"]).transferred_parts(family)
    return ("encoder",)


__all__ = [
    "FORMATS",
    "CheckpointError",
    "MappedState",
    "file_sha256",
    "read_state_dict",
    "strip_prefixes",
    "map_to_net",
    "load_checkpoint",
    "resolve_checkpoint",
]
