"""`scratch`: the baseline, a segmentation net trained from random initialisation."""

from __future__ import annotations

from cmrbench.methods import METHODS
from cmrbench.methods.base import SSPMethod


@METHODS.register
class Scratch(SSPMethod):
    """No pretraining: fine-tuning starts from random weights (the study's baseline)."""

    name = "scratch"
    paper = "baseline: no pretraining (de Mooij et al., arXiv 2409.18100)"
    transfers = {"cnn": (), "vit": ()}
    needs_pretraining = False
