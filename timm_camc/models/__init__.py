from .camc_resnet import *
