"""A segmentation net as a plugin file, for the tests that resolve it in other processes."""

from __future__ import annotations

from pathlib import Path

PLUGIN_NET = "unet2d_plugin"
PLUGIN_NET_SOURCE = f'''
from cmrbench.nets import NETS
from cmrbench.nets.unet import UNet2D


@NETS.register(net_class=UNet2D, downsampling=4)
def {PLUGIN_NET}(img_size=None, **kwargs):
    """3 stages of 4-16 channels (a plugin net for tests)."""
    net = UNet2D((4, 8, 16), **kwargs)
    if img_size is not None:
        net.check_input_size(img_size)
    return net
'''


def write_plugin_net(folder: Path) -> Path:
    """Write the plugin file registering `PLUGIN_NET` into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PLUGIN_NET}.py"
    path.write_text(PLUGIN_NET_SOURCE)
    return path


def plugin_net_grid(seeds: list[int]) -> dict:
    """A grid of ``scratch`` cells on `PLUGIN_NET`, one per seed (seconds each on a CPU)."""
    return {
        "name": "plugin-net",
        "dataset": {
            "name": "phantom",
            "options": {"n_train": 4, "n_val": 1, "n_test": 2},
            "image_size": 32,
            "spacing_mm": 5.0,
        },
        "encoders": [PLUGIN_NET],
        "methods": ["scratch"],
        "budgets": [1],
        "seeds": seeds,
        "augmentations": ["none"],
        "finetune": {"epochs": 1, "batch_size": 4, "val_every": 1},
    }
