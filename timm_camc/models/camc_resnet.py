""" ResNet / ResNeXt with a Class Activation Map Calibration (CAMC) head for long-tailed recognition

Paper: `Calibrating Class Activation Maps for Long-Tailed Visual Recognition` - https://arxiv.org/abs/2108.12757
    @article{zhang2021camc,
      title={Calibrating Class Activation Maps for Long-Tailed Visual Recognition},
      author={Zhang, Chi and Lin, Guosheng and Lai, Lvlong and Ding, Henghui and Wu, Qingyao},
      journal={arXiv preprint arXiv:2108.12757},
      year={2021}
    }

The backbone is timm's `ResNet` (blocks, stages, init, grad checkpointing, feature extraction); only the stem
(to add the 3x3 CIFAR stem of the long-tail literature) and the head (`timm_camc.layers.CamcHead`) are new.
Weights of timm's plain `resnet50`, `resnext50_32x4d` and `resnet152` load into the matching model here with
the backbone kept and a fresh head (see `checkpoint_filter_fn` and the `.tv_in1k` tags).

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import logging
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerType, get_act_layer, get_device_dtype, get_norm_layer, to_ntuple
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.resnet import BasicBlock, Bottleneck, ResNet, make_blocks

from timm_camc.pretrained import prepare_pretrained
from timm_camc.layers import HEAD_DEFAULTS, CamcHead
from timm_camc.weights import HUB_ORG

__all__ = ['CamcResNet']

_logger = logging.getLogger(__name__)

_STEM_STRIDE = {'': 4, 'cifar': 1}


class CamcResNet(ResNet):
    """ResNet / ResNeXt with a CAMC head.

    ``model(x)`` returns logits in train and eval mode. In training, ``model(x, target)`` also updates the
    class prototypes from the labels and returns a ``CamcOutput`` (calibrated logits, plain logits and the
    auxiliary-loss weight) for ``timm_camc.loss.CamcLoss``. With ``camc='none'`` and ``norm_classifier=False``
    the model is a plain ResNet, so the same arch serves the ablation baselines.
    """

    def __init__(
            self,
            block: Union[Type[BasicBlock], Type[Bottleneck]],
            layers: Tuple[int, ...],
            num_classes: int = 1000,
            in_chans: int = 3,
            output_stride: int = 32,
            global_pool: str = 'avg',
            cardinality: int = 1,
            base_width: int = 64,
            stem_width: int = 64,
            stem_type: str = '',
            channels: Tuple[int, ...] = (64, 128, 256, 512),
            act_layer: LayerType = nn.ReLU,
            norm_layer: LayerType = nn.BatchNorm2d,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            drop_block_rate: float = 0.,
            zero_init_last: bool = True,
            block_args: Optional[Dict[str, Any]] = None,
            device=None,
            dtype=None,
            **head_options,
    ):
        """
        Args:
            block: Residual block class, ``BasicBlock`` or ``Bottleneck``.
            layers: Number of blocks per stage (3 or 4 stages).
            num_classes: Number of classes, 0 for a feature extractor.
            in_chans: Input channels.
            output_stride: Output stride of the network (8, 16, 32; dilates the last stages).
            global_pool: Global pooling type.
            cardinality: Groups of the 3x3 conv in ``Bottleneck`` (ResNeXt).
            base_width: Bottleneck width factor.
            stem_width: Channels of the 'cifar' stem (the ImageNet stem is 64 wide, as in timm's ResNet).
            stem_type: '' for the 7x7 stride-2 conv + max-pool ImageNet stem, 'cifar' for one 3x3 stride-1 conv.
            channels: Channels of each stage (before block expansion).
            act_layer: Activation layer.
            norm_layer: Normalization layer.
            drop_rate: Dropout on the final feature map in the head.
            drop_path_rate: Stochastic depth rate.
            drop_block_rate: DropBlock rate.
            zero_init_last: Zero-init the last BN of each residual branch.
            block_args: Extra kwargs for the blocks.
            **head_options: Options of the CAMC head, by the names of ``timm_camc.layers.HEAD_OPTIONS`` (``camc``,
                ``norm_classifier``, ``cosine_scale``, ``learn_scale``, ``proto_momentum``, ``camc_topk``,
                ``nonneg_map``, ``aux_weight``; see ``CamcHead``). Pass ``camc='none'``, not None: timm's
                ``create_model`` drops kwargs that are None.
        """
        # ResNet.__init__ hard-codes the 64-channel ImageNet stem and timm's linear head; both are built here
        # from timm's parts, and the rest of ResNet's behaviour is inherited.
        nn.Module.__init__(self)
        dd = {'device': device, 'dtype': dtype}
        unknown = sorted(set(head_options) - set(HEAD_DEFAULTS))
        if unknown:
            raise TypeError(f'{type(self).__name__} got unexpected keyword argument(s) {", ".join(unknown)} (head '
                            f'options: {", ".join(HEAD_DEFAULTS)})')
        if stem_type not in _STEM_STRIDE:
            raise ValueError(f'Unknown stem_type {stem_type!r}, expected one of {sorted(_STEM_STRIDE)}')
        if output_stride not in (8, 16, 32):
            raise ValueError(f'output_stride must be 8, 16 or 32, got {output_stride}')
        if len(layers) != len(channels) or len(layers) not in (3, 4):
            raise ValueError(f'Need 3 or 4 stages with one channel count each, got layers={layers} channels={channels}')
        block_args = block_args or dict()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        act_layer = get_act_layer(act_layer)
        norm_layer = get_norm_layer(norm_layer)

        # Stem (module order matters: features_only runs the children in registration order)
        stem_stride = _STEM_STRIDE[stem_type]
        cifar = stem_type == 'cifar'
        inplanes = stem_width if cifar else 64
        if cifar:
            self.conv1 = nn.Conv2d(in_chans, inplanes, kernel_size=3, stride=1, padding=1, bias=False, **dd)
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, kernel_size=7, stride=2, padding=3, bias=False, **dd)
        self.bn1 = norm_layer(inplanes, **dd)
        self.act1 = act_layer(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=inplanes, reduction=stem_stride // 2 or 1, module='act1')]

        # Feature blocks. make_blocks counts strides from the ImageNet stem (4), so rescale for other stems.
        block_fns = to_ntuple(len(channels))(block)
        stage_modules, stage_feature_info = make_blocks(
            block_fns,
            channels,
            layers,
            inplanes,
            cardinality=cardinality,
            base_width=base_width,
            output_stride=output_stride * 4 // stem_stride,
            act_layer=act_layer,
            norm_layer=norm_layer,
            drop_block_rate=drop_block_rate,
            drop_path_rate=drop_path_rate,
            **block_args,
            **dd,
        )
        for name, stage in stage_modules:
            self.add_module(name, stage)
        if len(stage_modules) == 3:
            self.layer4 = nn.Sequential()  # empty last stage keeps ResNet's forward, as timm's own pruning does
        for info in stage_feature_info:
            info['reduction'] = info['reduction'] * stem_stride // 4
        self.feature_info.extend(stage_feature_info)

        # The backbone is initialised before the head draws any random numbers, so that models that differ only in
        # head options start from the same backbone and classifier weights (the paired comparisons rely on it).
        super().init_weights(zero_init_last=zero_init_last)

        # Head (initialises itself)
        self.num_features = channels[-1] * block_fns[-1].expansion
        self.head_args = dict(HEAD_DEFAULTS, **head_options, drop_rate=drop_rate)
        self.head = CamcHead(self.num_features, num_classes, pool_type=global_pool, **self.head_args, **dd)
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = True) -> None:
        super().init_weights(zero_init_last=zero_init_last)
        self.head.reset_parameters()  # ResNet's conv init would otherwise overwrite the zero-init map conv

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return 'head.fc' if name_only else self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head (classifier, calibration and prototypes), keeping its CAMC settings.

        Every call sequence that timm's ``ResNet`` accepts is accepted, and the model still runs afterwards: a
        classifier needs pooled features, so classes coming back after the pooling was removed (``''``) restore
        average pooling (timm's ResNet would keep ``''`` and fail in forward). The one refusal is a pooling that
        changes the channel count (``'catavgmax'``) together with a CAMC calibration, which pools the channels
        themselves. A refused call leaves the model unchanged.

        Args:
            num_classes: Number of classes for the new head, 0 for pooled features.
            global_pool: Global pooling type, the current one if None ('' with 0 classes: unpooled features).
        """
        if global_pool is None:
            global_pool = self.head.global_pool.pool_type or ('avg' if num_classes else '')
        elif not global_pool and num_classes:
            _logger.warning(f'reset_classifier({num_classes}, global_pool=\'\'): a classifier needs pooled features, '
                            f'using average pooling')
            global_pool = 'avg'
        dd = get_device_dtype(self)
        head = CamcHead(self.num_features, num_classes, pool_type=global_pool, **self.head_args, **dd)
        head.train(self.training)
        self.head = head
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features that returns intermediates (see ``ResNet.forward_intermediates``).

        Indices are resolved against this model's feature levels (4 for 3-stage CIFAR nets, 5 otherwise).
        """
        take_indices, _ = feature_take_indices(len(self.feature_info), indices)
        return super().forward_intermediates(
            x, take_indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt,
            intermediates_only=intermediates_only,
        )

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        take_indices, _ = feature_take_indices(len(self.feature_info), indices)
        return super().prune_intermediate_layers(take_indices, prune_norm=prune_norm, prune_head=prune_head)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    @torch.jit.ignore
    def explain(self, x: torch.Tensor, classes: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Logits with the class activation map and CAMC's calibration map of ``classes`` (default: predicted),
        at feature-map resolution (see ``CamcHead.explain``)."""
        return self.head.explain(self.forward_features(x), classes)

    def forward(self, x: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits; with ``target`` in training, a ``CamcOutput`` after updating the class prototypes.

        Args:
            x: Images (B, C, H, W).
            target: Class indices (B,), used in train mode only; ignored in eval mode.
        """
        x = self.forward_features(x)
        if not torch.jit.is_scripting():
            # labels are a training-only input: never scripted, and not followed by FX symbolic tracing
            if target is not None and self.training and not isinstance(target, torch.fx.Proxy):
                return self.head.forward_train(x, target)
        return self.forward_head(x)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: CamcResNet) -> Dict[str, torch.Tensor]:
    """Adapt a state dict to ``model`` before loading.

    * A plain timm ResNet/ResNeXt state dict (``fc.*`` head): the backbone is kept and the model's freshly
      initialised head is used.
    * Class-sized head tensors (classifier, prototypes) of another class count are replaced by the model's own
      initialisation.
    * ``balanced_q``'s label counts are taken when both sides have them, start at zero when only the model has
      them, and are dropped when only the checkpoint has them.
    * Any other shape mismatch raises, naming every mismatched tensor with both shapes.
    """
    state_dict = state_dict.get('state_dict', state_dict)
    model_sd = model.state_dict()
    if 'fc.weight' in state_dict and 'head.fc.weight' not in state_dict:
        _logger.info('Loading a plain timm ResNet checkpoint: keeping the backbone, the CAMC head starts fresh.')
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('fc.')}
        state_dict.update({k: v for k, v in model_sd.items() if k.startswith('head.')})

    class_tensors = {f'head.{n}' for n in CamcHead.class_tensors}
    out, mismatched, reset = {}, [], []
    for k, v in state_dict.items():
        if k in model_sd and v.shape != model_sd[k].shape:
            if k in class_tensors:
                reset.append(k)
                v = model_sd[k]
            else:
                mismatched.append(f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_sd[k].shape)}')
        out[k] = v
    # the label counts of balanced_q belong to the training run: a model with the option starts counting afresh
    # from a checkpoint without it, and a model without it has no use for them
    counts = 'head.calib.label_counts'
    if counts in model_sd:
        out.setdefault(counts, model_sd[counts])
    else:
        out.pop(counts, None)
    if mismatched:
        raise RuntimeError(
            f'Checkpoint does not fit {type(model).__name__} (wrong architecture or settings?): '
            + '; '.join(mismatched))
    if reset:
        _logger.info(f'Class count differs from the checkpoint, re-initialised: {", ".join(reset)}')
    return out


def _create_camc_resnet(variant: str, pretrained: bool = False, **kwargs) -> CamcResNet:
    if pretrained:
        # Hub weights: safetensors only, checked against their recorded sha256; planned tags say how to train them
        kwargs = prepare_pretrained(variant, kwargs)
    num_stages = len(kwargs.get('layers', (0,) * 4))
    return build_model_with_cfg(
        CamcResNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=tuple(range(num_stages + 1))),
        **kwargs,
    )


def _cfg(hf_hub_id: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'hf_hub_id': hf_hub_id,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1', 'classifier': 'head.fc',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2108.12757',
        'paper_name': 'Calibrating Class Activation Maps for Long-Tailed Visual Recognition',
        **kwargs,
    }


def _cifar_cfg(hf_hub_id: str = '', **kwargs) -> Dict[str, Any]:
    cifar = dict(
        input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    )
    return _cfg(hf_hub_id, **dict(cifar, **kwargs))


def _backbone_cfg(timm_hub_id: str, **kwargs) -> Dict[str, Any]:
    """Backbone-only initialisation from a plain timm ImageNet-1k checkpoint; the CAMC head starts fresh."""
    return _cfg(
        timm_hub_id, license='bsd-3-clause',
        description=f'Backbone from timm {timm_hub_id} (ImageNet-1k), freshly initialised CAMC head: '
                    f'for fine-tuning, pass num_classes.',
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    'resnet32_camc_lt.cifar10_lt_r100': _cifar_cfg(f'{HUB_ORG}/resnet32_camc_lt.cifar10_lt_r100', num_classes=10),
    'resnet32_camc_lt.cifar100_lt_r100': _cifar_cfg(
        f'{HUB_ORG}/resnet32_camc_lt.cifar100_lt_r100', num_classes=100,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),

    'resnet50_camc_lt.imagenet_lt': _cfg(f'{HUB_ORG}/resnet50_camc_lt.imagenet_lt'),
    'resnet50_camc_lt.inat2018': _cfg(f'{HUB_ORG}/resnet50_camc_lt.inat2018', num_classes=8142),
    'resnet50_camc_lt.tv_in1k': _backbone_cfg('timm/resnet50.tv_in1k'),

    'resnext50_camc_lt.imagenet_lt': _cfg(f'{HUB_ORG}/resnext50_camc_lt.imagenet_lt'),
    'resnext50_camc_lt.tv_in1k': _backbone_cfg('timm/resnext50_32x4d.tv_in1k'),

    'resnet152_camc_lt.places_lt': _cfg(f'{HUB_ORG}/resnet152_camc_lt.places_lt', num_classes=365),
    'resnet152_camc_lt.tv_in1k': _backbone_cfg('timm/resnet152.tv_in1k'),
})


@register_model
def resnet32_camc_lt(pretrained: bool = False, **kwargs) -> CamcResNet:
    """ResNet-32 for CIFAR (3 stages of 5 basic blocks, 16/32/64 channels, 3x3 stem) with a CAMC head."""
    model_args = dict(block=BasicBlock, layers=(5, 5, 5), channels=(16, 32, 64), stem_type='cifar', stem_width=16)
    return _create_camc_resnet('resnet32_camc_lt', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_camc_lt(pretrained: bool = False, **kwargs) -> CamcResNet:
    """ResNet-50 with a CAMC head."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create_camc_resnet('resnet50_camc_lt', pretrained, **dict(model_args, **kwargs))


@register_model
def resnext50_camc_lt(pretrained: bool = False, **kwargs) -> CamcResNet:
    """ResNeXt-50 32x4d with a CAMC head."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), cardinality=32, base_width=4)
    return _create_camc_resnet('resnext50_camc_lt', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet152_camc_lt(pretrained: bool = False, **kwargs) -> CamcResNet:
    """ResNet-152 with a CAMC head."""
    model_args = dict(block=Bottleneck, layers=(3, 8, 36, 3))
    return _create_camc_resnet('resnet152_camc_lt', pretrained, **dict(model_args, **kwargs))
