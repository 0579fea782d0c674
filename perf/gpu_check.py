"""GPU check: harness vs bare-step throughput of the paper U-Net and ViT-S/16, as JSON.

    python perf/gpu_check.py [--quick] > gpu.json

For the paper's U-Net (``unet2d``, batch 32, 256 x 256) and ViT-S/16 (``vit_small``,
batch 128, 224 x 224) it reports, for fine-tuning and for each method's pretraining:
the harness's images/s (the real loops of `cmrbench.benchmark.train`, augmentation on
the device, bf16 autocast), the bare step's images/s (same net, loss, optimizer and
precision on a batch already on the device, no augmentation), timed eager and compiled
(the faster counts), their ratio, and peak GPU memory. It also checks that a short
fine-tuning run on CUDA in bf16 lowers the loss, and that CUDA and CPU give the same
segmentation loss for the same weights and batch (float32). It imports only torch, timm
and cmrbench's harness (no monai, nibabel or pydicom), and finishes in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrbench.benchmark.losses import deep_supervised_loss  # noqa: E402
from cmrbench.benchmark.throughput import (
    bare_finetune_images_per_s,  # noqa: E402
    bare_pretrain_images_per_s,
    harness_finetune_images_per_s,
    harness_pretrain_images_per_s,
    synthetic_slices,
)
from cmrbench.nets import create_net  # noqa: E402

CONFIGS = [("unet2d", 256, 32), ("vit_small", 224, 128)]
METHODS = ["simclr", "pcl", "dino", "mim"]


def _peak_reset(device: torch.device) -> None:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30


def measure(name: str, harness_fn, bare_fn, device: torch.device, compile_bare: bool) -> dict:
    """Harness and bare images/s (eager and, if asked, compiled) with their ratio;
    ``bare_fn(compiled)`` times the bare step, eager or through `torch.compile`."""
    out: dict = {}
    _peak_reset(device)
    out["harness_images_per_s"] = harness_fn()
    out["harness_peak_gib"] = _peak_gib(device)
    _peak_reset(device)
    out["bare_eager_images_per_s"] = bare_fn(False)
    out["bare_peak_gib"] = _peak_gib(device)
    if compile_bare:
        try:
            out["bare_compiled_images_per_s"] = bare_fn(True)
        except Exception as exc:  # report, do not hide: compile support varies by version
            out["bare_compiled_error"] = f"{type(exc).__name__}: {exc}"
    best = max(v for k, v in out.items() if k.startswith("bare_") and k.endswith("_per_s"))
    out["bare_best_images_per_s"] = best
    out["ratio_harness_to_best_bare"] = out["harness_images_per_s"] / best
    print(f"{name}: {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def correctness(device: torch.device) -> dict:
    """CUDA vs CPU loss for the same weights and batch; bf16 fine-tuning lowers the loss."""
    torch.manual_seed(0)
    net = create_net("unet2d_s", img_size=64).train()
    data = synthetic_slices(8, 64, torch.device("cpu"))
    images, labels, annotated = data.batch(torch.arange(8))
    cpu_loss = deep_supervised_loss(net(images), labels, annotated).item()
    net_cuda = net.to(device)
    cuda_loss = deep_supervised_loss(
        net_cuda(images.to(device)), labels.to(device), annotated.to(device)
    ).item()
    import tempfile

    from cmrbench.benchmark.train import finetune
    from cmrbench.store import JsonlLog
    from cmrbench.transforms.augment import BatchAugment

    slices = synthetic_slices(64, 64, device)
    slices.labels = (slices.images[:, 0] > 0.5).to(torch.uint8)  # learnable: threshold task
    with tempfile.TemporaryDirectory() as tmp:
        log = JsonlLog(Path(tmp) / "log.jsonl")
        net2 = create_net("unet2d_s", img_size=64).to(device)
        finetune(
            net2,
            slices,
            None,
            epochs=50,
            batch_size=16,
            optim=net2.finetune_optim,
            augment=BatchAugment("none", 64),
            seed=0,
            device=device,
            log=log,
            show_progress=False,
        )
        losses = [r["loss"] for r in log.records()]
    return {
        "cpu_loss": cpu_loss,
        "cuda_fp32_loss": cuda_loss,
        "abs_diff": abs(cpu_loss - cuda_loss),
        "bf16_finetune_first_loss": losses[0],
        "bf16_finetune_last_loss": losses[-1],
        "bf16_loss_fell": losses[-1] < 0.7 * losses[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke check)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled bare step")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        raise SystemExit(1)
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    steps, warmup = (5, 2) if args.quick else (20, 5)
    started = time.time()
    report: dict = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "steps": steps,
        "results": {},
    }
    try:
        report["correctness"] = correctness(device)
    except Exception:
        report["correctness_error"] = traceback.format_exc()
    for encoder, size, batch in CONFIGS:
        key = f"{encoder}_b{batch}_{size}px"
        res = report["results"][key] = {}
        res["finetune"] = measure(
            f"{key} finetune",
            partial(harness_finetune_images_per_s, encoder, size, batch, device, steps, warmup),
            partial(bare_finetune_images_per_s, encoder, size, batch, device, steps, warmup),
            device,
            compile_bare=not args.no_compile,
        )
        for method in METHODS:
            pre_batch = batch if method != "dino" else max(batch // 2, 8)
            try:
                res[f"pretrain_{method}"] = measure(
                    f"{key} pretrain {method}",
                    partial(
                        harness_pretrain_images_per_s,
                        *(method, encoder, size, pre_batch, device, max(steps // 2, 3), warmup),
                    ),
                    partial(
                        bare_pretrain_images_per_s,
                        *(method, encoder, size, pre_batch, device, max(steps // 2, 3), warmup),
                    ),
                    device,
                    compile_bare=False,
                )
                res[f"pretrain_{method}"]["batch"] = pre_batch
            except Exception:
                res[f"pretrain_{method}"] = {"error": traceback.format_exc()}
    report["wall_s"] = time.time() - started
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
