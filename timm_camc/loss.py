""" Losses for CAMC models

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from typing import Union

import torch
import torch.nn as nn

from timm_camc.layers import CamcOutput

__all__ = ['CamcLoss']


class CamcLoss(nn.Module):
    """Wraps a criterion so it also takes a ``CamcOutput``: ``L(z) + aux_weight * L(plain logits)``.

    A plain logits tensor (eval mode, or a model without calibration) is passed to the criterion unchanged.
    """

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    def forward(self, output: Union[torch.Tensor, CamcOutput], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, CamcOutput):
            return self.criterion(output, target)
        loss = self.criterion(output.logits, target)
        if output.aux_logits is not None and output.aux_weight > 0:
            loss = loss + output.aux_weight * self.criterion(output.aux_logits, target)
        return loss
