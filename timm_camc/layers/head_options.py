""" The options of the CAMC head, defined once

``HEAD_OPTIONS`` is the one definition of the head's options: ``CamcHead``'s kwargs (a test checks its signature
against it), the models' kwargs, train.py's options, the options a checkpoint records and ``config.json``'s
``model_args`` all take their names and defaults from it.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .calibration import CALIBRATIONS

__all__ = ['HeadOption', 'HEAD_OPTIONS', 'HEAD_DEFAULTS']


@dataclass(frozen=True)
class HeadOption:
    """One option of the CAMC head, under one name everywhere: the ``CamcHead`` and model kwarg, the train.py option
    (``--name-with-dashes``; booleans also as ``--no-...``), the checkpoint's recorded options and ``config.json``'s
    ``model_args``.

    Attributes:
        name: The option's name.
        default: Its default (its type is the option's type).
        help: One line for ``--help``.
        choices: The allowed values, for a string option that has a fixed set.
    """
    name: str
    default: Any
    help: str
    choices: Optional[Tuple[str, ...]] = None


# the head's options, once: CamcHead's signature, the models, train.py, the checkpoint readers and the publisher
# follow this table (a test checks CamcHead's signature against it)
HEAD_OPTIONS: Tuple[HeadOption, ...] = (
    HeadOption('camc', 'global', "calibration: 'global' (variant B), 'batch' (D: across the batch's images in "
                                 "training), 'class' (A), 'target' (C, in training only) or 'none'",
               choices=(*CALIBRATIONS, 'none')),
    HeadOption('norm_classifier', True, 'cosine-normalised classifier (--no-norm-classifier: plain linear)'),
    HeadOption('cosine_scale', 16., 'the scale s of the cosine classifier'),
    HeadOption('learn_scale', False, 'learn the scale s'),
    HeadOption('proto_momentum', 0.9, 'EMA momentum of the class prototypes'),
    HeadOption('camc_topk', 32, "'global' calibration over the most probable classes only (0: all classes)"),
    HeadOption('nonneg_map', False, 'non-negative weights in the map conv: the map can only highlight what the class '
                                    'and prototype maps highlight'),
    HeadOption('balanced_q', False, 'weight the maps by the prediction logit-adjusted by the label frequencies seen in '
                                    "training ('global' and 'batch')"),
    HeadOption('aux_weight', 0.5, 'weight of the auxiliary loss (on the plain logits; the calibrated ones for '
                                  "'target')"),
)
HEAD_DEFAULTS: Dict[str, Any] = {o.name: o.default for o in HEAD_OPTIONS}
