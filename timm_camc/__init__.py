"""timm-camc: CAMC-augmented ResNet/ResNeXt models for long-tailed recognition, registered with timm.

``import timm_camc`` registers ``resnet32_camc_lt``, ``resnet50_camc_lt``, ``resnext50_camc_lt`` and
``resnet152_camc_lt`` with timm's model registry.
"""
from .version import __version__
from .layers import CamcHead, CamcOutput
from .loss import CamcLoss
from .models import CamcResNet
