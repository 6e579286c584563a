from .camc_resnet import *
from .registry import camc_model_kwargs, is_camc_model
