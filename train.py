#!/usr/bin/env python3
""" Long-tailed training with timm's machinery and timm-camc's models, samplers, losses and metrics

    python train.py -c configs/cifar10_lt_r100.yaml --data-dir data/cifar10-jpeg
    torchrun --nproc_per_node 8 train.py -c configs/imagenet_lt_resnext50.yaml --data-dir /data/ImageNet_LT

Every option can come from a YAML file (-c); command-line options override it. Outputs go to
``<output>/<experiment>/``: ``args.yaml``, ``summary.csv``, ``last.pth.tar`` / ``model_best.pth.tar`` and the
top checkpoints (written atomically), ``lt_train.txt`` / ``lt_subset.json`` when a long-tailed subset is built,
and ``results.json`` (the final evaluation with many / medium / few-shot accuracy).

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import argparse
import json
import logging
import os
import shlex
import sys
import time
from contextlib import suppress
from functools import partial

import torch
import torch.nn as nn
import yaml

import timm
import timm_camc
from timm.data import Mixup, create_loader, resolve_data_config
from timm.models import load_checkpoint, resume_checkpoint
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import ModelEmaV3, NativeScaler, get_outdir, init_distributed_device, \
    random_seed, setup_default_logging, unwrap_model
from timm_camc.data import SAMPLER_NAMES, TRAIN_CROP_MODES, CorruptImageError, InMemoryEvalLoader, \
    InMemoryTrainLoader, create_lt_datasets, create_sampler, create_train_loader, create_train_transform, \
    RankShard, check_pad_crop, decode_images, in_memory_blockers, sampler_options, write_lt_subset
from timm_camc.data.long_tail import PROFILES
from timm_camc.engine import AtomicCheckpointSaver, NonFiniteLossError, accepts_target, check_finite_state, \
    evaluate, train_one_epoch, write_summary_row
from timm_camc.layers import HEAD_OPTIONS
from timm_camc.loss import LOSSES, CamcLoss, classifier_loss_kwargs, create_loss, loss_options
from timm_camc.metrics import LongTailMetrics, default_class_groups
from timm_camc.checkpoint import read_checkpoint, summarize_load_error
from timm_camc.models import camc_model_kwargs, is_camc_model

_logger = logging.getLogger('train')

# The first parser reads only the config file; its values become the defaults of the main parser.
config_parser = parser = argparse.ArgumentParser(description='Training Config', add_help=False)
parser.add_argument('-c', '--config', default='', type=str, metavar='FILE', help='YAML config file of defaults')

parser = argparse.ArgumentParser(description='timm-camc long-tailed training')

group = parser.add_argument_group('Dataset parameters')
group.add_argument('--data-dir', metavar='DIR', default='', help='root folder of the dataset')
group.add_argument('--dataset', metavar='NAME', default='',
                   help="'' for an image folder / list files, or a timm source such as torch/cifar10")
group.add_argument('--train-split', metavar='NAME', default='train', help='training split (folder) name')
group.add_argument('--val-split', metavar='NAME', default='validation', help="validation split ('' for none)")
group.add_argument('--train-list', metavar='FILE', default='', help='list file of training images (path label)')
group.add_argument('--val-list', metavar='FILE', default='', help='list file of validation images (path label)')
group.add_argument('--dataset-download', action='store_true', help='download a torch/* dataset (needs internet)')
group.add_argument('--skip-corrupt', action='store_true',
                   help='skip (and count) unreadable images instead of stopping with an error naming the file')
group.add_argument('--allow-empty-classes', action='store_true',
                   help='train without class folders that hold no image (otherwise an error names them)')
group.add_argument('--in-memory', default='auto', choices=('auto', 'on', 'off'),
                   help="decode the images once and augment batches with tensor ops on the device (the 'pad' "
                        "recipe only); 'auto': whenever the recipe allows it and the images fit --in-memory-max-gb")
group.add_argument('--in-memory-max-gb', type=float, default=4., metavar='GB',
                   help='largest decoded training set (uint8) that --in-memory auto keeps in memory')

group = parser.add_argument_group('Model parameters')
group.add_argument('--model', default='resnet32_camc_lt', metavar='NAME', help='timm model name')
group.add_argument('--pretrained', action='store_true', help='start from the pretrained weights of the tag')
group.add_argument('--pretrained-path', default='', metavar='PATH',
                   help='load this weights file as the pretrained weights, with adaptation (a plain timm ResNet '
                        'gives its backbone, another class count re-initialises the head)')
group.add_argument('--initial-checkpoint', default='', metavar='PATH', help='load these weights first')
group.add_argument('--resume', default='', metavar='PATH', help='resume a run: model, optimizer, scaler, EMA, epoch')
group.add_argument('--no-resume-opt', action='store_true', help='do not restore the optimizer when resuming')
group.add_argument('--num-classes', type=int, default=None, metavar='N', help='classes (default: from the data)')
group.add_argument('--gp', default=None, type=str, metavar='POOL', help='global pool type')
group.add_argument('--img-size', type=int, default=None, metavar='N', help='image size (default: model cfg)')
group.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N', help='C H W (default: model cfg)')
group.add_argument('--crop-pct', default=None, type=float, metavar='PCT', help='eval crop percentage')
group.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN', help='pixel mean')
group.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='pixel std')
group.add_argument('--interpolation', default='', type=str, metavar='NAME', help='resize interpolation')
group.add_argument('-b', '--batch-size', type=int, default=128, metavar='N', help='batch size per process')
group.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N')
group.add_argument('--channels-last', action='store_true', help='channels_last memory layout')
group.add_argument('--grad-checkpointing', action='store_true', help='gradient checkpointing')
group.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor', help='torch.compile backend')
group.add_argument('--drop', type=float, default=0., metavar='PCT', help='dropout on the final features')
group.add_argument('--drop-path', type=float, default=None, metavar='PCT', help='drop path rate')

group = parser.add_argument_group('CAMC head (models *_camc_lt; the model kwargs of the same names)')
for option in HEAD_OPTIONS:
    flag = '--' + option.name.replace('_', '-')
    if isinstance(option.default, bool):
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=option.default, help=option.help)
    else:
        group.add_argument(flag, type=type(option.default), default=option.default, choices=option.choices,
                           help=option.help)
group.add_argument('--calib-warmup', type=int, default=0, metavar='EPOCHS',
                   help='train the plain classifier alone for the first EPOCHS epochs, then switch the calibration '
                        'on (its map conv stays at its flat start until then)')

group = parser.add_argument_group('Long-tail parameters')
group.add_argument('--lt-imbalance', type=float, default=0., metavar='IF',
                   help='build a long-tailed training subset with imbalance factor n_max / n_min (0: use as is)')
group.add_argument('--lt-profile', default='exp', choices=PROFILES, help='long-tail profile')
group.add_argument('--lt-seed', type=int, default=0, help='seed of the per-class shuffle of the subset')
group.add_argument('--sampler', default='instance', choices=SAMPLER_NAMES, help='training sampler')
group.add_argument('--sampler-power', type=float, default=0.5, help="q of the 'power' sampler (p_j ~ n_j^q)")
group.add_argument('--repeat-threshold', type=float, default=0.001, help="threshold of the 'repeat_factor' sampler")
group.add_argument('--loss', default='ce', choices=tuple(LOSSES), help='training loss')
group.add_argument('--la-tau', type=float, default=1.0, help='tau of the logit-adjusted loss')
group.add_argument('--ldam-margin', type=float, default=0.5, help='largest LDAM margin')
group.add_argument('--ldam-scale', type=float, default=None,
                   help='LDAM logit scale (default: 30 on cosine logits, 1 on the raw logits of a linear classifier)')
group.add_argument('--drw-epoch', type=int, default=None, help='deferred re-weighting from this epoch (LDAM)')
group.add_argument('--cb-beta', type=float, default=0.9999, help='beta of the effective number of samples')
group.add_argument('--crt', action='store_true',
                   help='classifier re-training: freeze everything but the head of --initial-checkpoint, '
                        're-initialise the head, and train it (use with --sampler class_balanced)')

group = parser.add_argument_group('Optimizer parameters')
group.add_argument('--opt', default='momentum', type=str, metavar='OPTIMIZER', help='optimizer (timm names)')
group.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON')
group.add_argument('--momentum', type=float, default=0.9, metavar='M', help='SGD momentum')
group.add_argument('--weight-decay', type=float, default=2e-4, help='weight decay')
group.add_argument('--clip-grad', type=float, default=None, metavar='NORM', help='gradient clipping')
group.add_argument('--clip-mode', type=str, default='norm', help="'norm', 'value' or 'agc'")

group = parser.add_argument_group('Learning rate schedule parameters')
group.add_argument('--sched', type=str, default='multistep', metavar='SCHEDULER', help='timm LR scheduler')
group.add_argument('--sched-on-updates', action='store_true', help='step the schedule per update')
group.add_argument('--lr', type=float, default=0.1, metavar='LR', help='learning rate')
group.add_argument('--epochs', type=int, default=200, metavar='N', help='epochs')
group.add_argument('--decay-milestones', default=[161, 181], type=int, nargs='+', metavar='MILESTONES')
group.add_argument('--decay-epochs', type=float, default=90, metavar='N', help="epoch interval of 'step'")
group.add_argument('--decay-rate', '--dr', type=float, default=0.01, metavar='RATE', help='LR decay rate')
group.add_argument('--warmup-epochs', type=int, default=5, metavar='N', help='linear warm-up epochs')
group.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='warm-up start LR')
group.add_argument('--warmup-prefix', action='store_true', help='warm-up before, not inside, the schedule')
group.add_argument('--min-lr', type=float, default=0, metavar='LR', help='lower LR bound')
group.add_argument('--cooldown-epochs', type=int, default=0, metavar='N')

group = parser.add_argument_group('Augmentation and regularization parameters')
group.add_argument('--train-crop-mode', default='pad', choices=TRAIN_CROP_MODES,
                   help="'pad' (pad 4 + random crop, CIFAR) or timm's 'rrc' (random resized crop) / 'rkrc'")
group.add_argument('--scale', type=float, nargs=2, default=[0.08, 1.0], metavar='PCT', help='RRC scale')
group.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
group.add_argument('--color-jitter', type=float, default=0., metavar='PCT', help='color jitter (rrc modes)')
group.add_argument('--aa', type=str, default=None, metavar='NAME', help='AutoAugment policy (rrc modes)')
group.add_argument('--reprob', type=float, default=0., metavar='PCT', help='random erase probability')
group.add_argument('--mixup', type=float, default=0.0, help='mixup alpha')
group.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha')
group.add_argument('--mixup-off-epoch', default=0, type=int, metavar='N', help='turn mixup off after this epoch')
group.add_argument('--smoothing', type=float, default=0.0, help='label smoothing (ce loss)')

group = parser.add_argument_group('Model exponential moving average parameters')
group.add_argument('--model-ema', action='store_true', help='keep an EMA of the weights (ModelEmaV3)')
group.add_argument('--model-ema-decay', type=float, default=0.9998, help='EMA decay')
group.add_argument('--model-ema-warmup', action='store_true', help='EMA decay warm-up')

group = parser.add_argument_group('Miscellaneous parameters')
group.add_argument('--seed', type=int, default=0, metavar='S', help='random seed')
group.add_argument('--log-interval', type=int, default=50, metavar='N', help='batches between log lines')
group.add_argument('--checkpoint-hist', type=int, default=3, metavar='N', help='best checkpoints to keep')
group.add_argument('-j', '--workers', type=int, default=2, metavar='N', help='data loading workers per process')
group.add_argument('--amp', action='store_true',
                   help='mixed precision: --amp-dtype autocast on CUDA; bfloat16 autocast on a CPU with bf16 support '
                        '(AMX / AVX512-BF16: about 2x the fp32 speed with --channels-last), fp32 on one without')
group.add_argument('--amp-dtype', default='bfloat16', choices=('bfloat16', 'float16'), help='AMP dtype on CUDA')
group.add_argument('--no-prefetcher', action='store_true', help="disable timm's fast prefetcher")
group.add_argument('--pin-mem', action='store_true', help='pin loader memory')
group.add_argument('--output', default='output/train', type=str, metavar='PATH', help='output folder')
group.add_argument('--experiment', default='', type=str, metavar='NAME', help='run name (default: generated)')
group.add_argument('--eval-metric', default='top1', type=str, metavar='METRIC', help='best-checkpoint metric')
group.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', type=str, help='device')
group.add_argument('--eval-interval', type=int, default=1, metavar='N', help='evaluate every N epochs (and last)')


def _parse_args(argv=None):
    args_config, remaining = config_parser.parse_known_args(argv)
    if args_config.config:
        if not os.path.isfile(args_config.config):
            parser.error(f'config file not found: {args_config.config}')
        with open(args_config.config) as f:
            try:
                cfg = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                parser.error(f'invalid YAML in {args_config.config}: {" ".join(str(e).split())}')
        if not isinstance(cfg, dict):
            parser.error(f'{args_config.config} must map option names to values, got a {type(cfg).__name__}')
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(cfg) - known)
        if unknown:
            parser.error(f'unknown option(s) in {args_config.config}: {", ".join(unknown)}')
        parser.set_defaults(**cfg)
    args = parser.parse_args(remaining)
    args.config = args_config.config
    args_text = yaml.safe_dump(args.__dict__, default_flow_style=False)
    return args, args_text


def _check_args(args):
    """Errors that need no data: an unknown model, an unreadable checkpoint, options that do not go together."""
    if not args.model.startswith(('hf-hub:', 'local-dir:')) and not timm.is_model(args.model):
        raise ValueError(f'Unknown model {args.model!r}: timm.list_models() names them (CAMC models: '
                         f'{", ".join(timm.list_models("*camc*"))})')
    for option, path in (('--resume', args.resume), ('--initial-checkpoint', args.initial_checkpoint)):
        if path:
            if not os.path.isfile(path):
                raise FileNotFoundError(f'{option}: checkpoint not found: {path}')
            try:
                # (timm.utils.load_checkpoint_metadata does this from timm 1.0.31; setup.cfg allows 1.0.29)
                read_checkpoint(path)
            except Exception as e:  # truncated, not a checkpoint, or written by something else
                raise ValueError(f'{option}: cannot read checkpoint {path} ({type(e).__name__}: '
                                 f'{" ".join(str(e).split())[:200]}); is it complete?') from None
    if args.loss == 'ldam' and args.learn_scale and args.norm_classifier and is_camc_model(args.model):
        raise ValueError('--loss ldam with --learn-scale: LDAM re-scales the cosine logits by the fixed '
                         '--cosine-scale, which a learned scale would make wrong; drop one of them')


def _amp_dtype(args, device):
    """The autocast dtype of ``--amp`` on ``device``, or None (fp32)."""
    if not args.amp:
        return None
    if device.type != 'cpu':
        return torch.bfloat16 if args.amp_dtype == 'bfloat16' else torch.float16
    # no public API tells whether oneDNN has fast bf16 kernels on this CPU (AVX512-BF16 or AMX)
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        _logger.warning('--amp: this CPU has no bfloat16 support (AVX512-BF16 / AMX): training in fp32')
        return None
    if args.amp_dtype != 'bfloat16':
        _logger.warning(f'--amp-dtype {args.amp_dtype} is for CUDA: autocast on the CPU uses bfloat16')
    return torch.bfloat16


def _in_memory_loaders(args, train_ds, val_ds, sampler, data_config, device):
    """The in-memory training and evaluation loaders that ``--in-memory`` asks for, or None for the PIL loaders.

    'auto' uses them whenever the recipe allows it (the 'pad' crop, images already at the input size, within the
    memory budget); 'on' turns a reason against them into an error.
    """
    if args.in_memory == 'off':
        return None, None
    input_size = data_config['input_size']
    blockers = in_memory_blockers(
        args.train_crop_mode, args.color_jitter, args.aa, args.reprob, num_images=len(train_ds),
        input_size=input_size, max_bytes=args.in_memory_max_gb * 2 ** 30)
    images = None
    if not blockers:
        try:
            images, labels = decode_images(train_ds, size=input_size[1:])
        except ValueError as e:  # images of another size
            blockers.append(str(e))
    if blockers:
        if args.in_memory == 'on':
            raise ValueError(f'--in-memory on is not possible: {"; ".join(blockers)}')
        _logger.info(f'In-memory loader off ({"; ".join(blockers)}): PIL loader with {args.workers} workers')
        return None, None
    mean, std = data_config['mean'], data_config['std']
    loader_train = InMemoryTrainLoader(
        images, labels, sampler, args.batch_size, device=device, mean=mean, std=std, hflip=args.hflip,
        seed=args.seed, rank=args.rank, channels_last=args.channels_last)
    _logger.info(f'In-memory training loader: {len(images)} images ({images.numel() / 2 ** 20:.0f} MiB uint8) on '
                 f'{device}, augmented per batch (pad 4, random crop, flip {args.hflip})')
    loader_eval = None
    # timm's eval transform is the identity for images at the input size with crop_pct 1; DDP keeps timm's loader
    if val_ds is not None and data_config['crop_pct'] == 1. and not args.distributed:
        try:
            val_images, val_labels = decode_images(val_ds, size=input_size[1:])
            loader_eval = InMemoryEvalLoader(
                val_images, val_labels, args.validation_batch_size or args.batch_size, device=device, mean=mean,
                std=std, channels_last=args.channels_last)
        except ValueError as e:
            _logger.info(f'In-memory evaluation loader off ({e})')
    return loader_train, loader_eval


def _model_kwargs(args, num_classes):
    pretrained = args.pretrained or bool(args.pretrained_path)
    kwargs = dict(num_classes=num_classes, drop_rate=args.drop, pretrained=pretrained)
    if args.pretrained_path:
        if not os.path.isfile(args.pretrained_path):
            raise FileNotFoundError(f'--pretrained-path: weights file not found: {args.pretrained_path}')
        kwargs['pretrained_cfg_overlay'] = dict(file=args.pretrained_path)
    if args.drop_path is not None:
        kwargs['drop_path_rate'] = args.drop_path
    if args.gp:
        kwargs['global_pool'] = args.gp
    kwargs.update(camc_model_kwargs(args.model, args))
    return kwargs


def main(argv=None):
    setup_default_logging()
    args, args_text = _parse_args(argv)
    device = init_distributed_device(args)
    if args.distributed:
        _logger.info(f'Distributed training: process {args.rank} of {args.world_size}, device {args.device}')
    is_main = args.rank == 0
    random_seed(args.seed, args.rank)  # every RNG from (seed, epoch, rank): see the epoch loop
    _check_args(args)  # everything is validated before the output folder is made

    train_ds, val_ds, lt_info = create_lt_datasets(
        args.data_dir, dataset=args.dataset, train_split=args.train_split, val_split=args.val_split,
        train_list=args.train_list, val_list=args.val_list, download=args.dataset_download,
        imbalance=args.lt_imbalance, profile=args.lt_profile, lt_seed=args.lt_seed, num_classes=args.num_classes,
        skip_corrupt=args.skip_corrupt, allow_empty_classes=args.allow_empty_classes)
    num_classes = lt_info.num_classes
    # stored in args so that every checkpoint carries the training class counts (many / medium / few groups)
    args.num_classes, args.class_counts, args.class_names = num_classes, lt_info.class_counts, lt_info.class_names
    _logger.info(f'Class counts: {lt_info.class_counts}')

    model = timm.create_model(args.model, **_model_kwargs(args, num_classes))
    if args.initial_checkpoint:
        load_checkpoint(model, args.initial_checkpoint, strict=not args.crt)
    if args.crt:
        if not args.initial_checkpoint:
            raise SystemExit('--crt re-trains the classifier of a trained model: give it --initial-checkpoint')
        model.reset_classifier(num_classes)
        head = model.get_classifier(name_only=True).split('.')[0]
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(head + '.'))
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    model.to(device=device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    pass_target = accepts_target(model)
    data_config = resolve_data_config(vars(args), model=model, verbose=is_main)
    if is_main:
        _logger.info(f'Model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, '
                     f'{num_classes} classes, labels to the model: {pass_target}')

    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))
    amp_autocast, loss_scaler = suppress, None
    amp_dtype = _amp_dtype(args, device)
    if amp_dtype is not None:
        amp_autocast = partial(torch.autocast, device_type=device.type, dtype=amp_dtype)
        if device.type == 'cuda' and amp_dtype == torch.float16:
            loss_scaler = NativeScaler(device=device.type)

    resume_epoch = None
    if args.resume:
        try:
            resume_epoch = resume_checkpoint(
                model, args.resume, optimizer=None if args.no_resume_opt else optimizer,
                loss_scaler=None if args.no_resume_opt else loss_scaler, log_info=is_main)
        except RuntimeError as e:  # tensors of other shapes: another class count or architecture
            raise ValueError(f'--resume: {args.resume} does not fit {args.model} with {num_classes} classes: '
                             f'{summarize_load_error(e)}') from None

    model_ema = None
    if args.model_ema:
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup, device=device)
        if args.resume:
            load_checkpoint(model_ema.module, args.resume, use_ema=True)

    if args.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == 'cuda' else None)
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)

    sampler = create_sampler(
        args.sampler, train_ds.targets, seed=args.seed, num_replicas=args.world_size, rank=args.rank,
        num_classes=num_classes, **sampler_options(args.sampler, vars(args)))
    loader_train, loader_eval = _in_memory_loaders(args, train_ds, val_ds, sampler, data_config, device)
    use_prefetcher = not args.no_prefetcher
    if loader_train is None:
        if args.train_crop_mode == 'pad':
            check_pad_crop(train_ds, data_config['input_size'])
        train_transform = create_train_transform(
            data_config['input_size'], train_crop_mode=args.train_crop_mode, use_prefetcher=use_prefetcher,
            mean=data_config['mean'], std=data_config['std'], hflip=args.hflip, scale=args.scale,
            color_jitter=args.color_jitter, auto_augment=args.aa, interpolation=data_config['interpolation'])
        loader_train = create_train_loader(
            train_ds, sampler, args.batch_size, train_transform, num_workers=args.workers,
            use_prefetcher=use_prefetcher, device=device, mean=data_config['mean'], std=data_config['std'],
            re_prob=args.reprob, pin_memory=args.pin_mem, seed=args.seed, rank=args.rank)
    if loader_eval is None and val_ds is not None:
        # under DDP each rank evaluates its own share, every image once (timm's distributed eval sampler would pad
        # the shares with repeats that the metrics count twice); the unwrapped model runs them, see below
        loader_eval = create_loader(
            RankShard(val_ds, args.rank, args.world_size) if args.distributed else val_ds,
            input_size=data_config['input_size'], batch_size=args.validation_batch_size or args.batch_size,
            is_training=False, interpolation=data_config['interpolation'], mean=data_config['mean'],
            std=data_config['std'], num_workers=args.workers, distributed=False,
            crop_pct=data_config['crop_pct'], pin_memory=args.pin_mem, device=device, use_prefetcher=use_prefetcher)

    mixup_fn = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing,
                         num_classes=num_classes)
    cosine = is_camc_model(args.model) and args.norm_classifier
    loss_kwargs = dict(classifier_loss_kwargs(args.loss, args.cosine_scale if cosine else None),
                       **loss_options(args.loss, vars(args)))
    train_loss_fn = CamcLoss(
        create_loss(args.loss, lt_info.class_counts, **loss_kwargs), calib_warmup=args.calib_warmup).to(device)

    updates_per_epoch = len(loader_train)
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args, decreasing_metric='loss' in args.eval_metric),
        updates_per_epoch=updates_per_epoch)
    start_epoch = resume_epoch or 0
    if lr_scheduler is not None and start_epoch > 0:
        if args.sched_on_updates:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)
        else:
            lr_scheduler.step(start_epoch)

    output_dir = ''
    if is_main:
        exp_name = args.experiment or '-'.join([time.strftime('%Y%m%d-%H%M%S'), args.model.replace('/', '_')])
        output_dir = get_outdir(args.output, exp_name, inc=not args.resume and not args.experiment)
        with open(os.path.join(output_dir, 'args.yaml'), 'w') as f:
            f.write(args_text)
        write_lt_subset(output_dir, lt_info, train_ds)

    saver = None
    if is_main:
        saver = AtomicCheckpointSaver(
            model=model, optimizer=optimizer, args=args, model_ema=model_ema, amp_scaler=loss_scaler,
            checkpoint_dir=output_dir, recovery_dir=output_dir, decreasing='loss' in args.eval_metric,
            max_history=args.checkpoint_hist)
        if args.resume and hasattr(saver, 'load_state_dict_from_checkpoint'):
            saver.load_state_dict_from_checkpoint(args.resume)
        _logger.info(f'Output: {output_dir}')

    train_counts = lt_info.class_counts
    metrics = LongTailMetrics(num_classes, train_counts=train_counts,
                              class_groups=default_class_groups(num_classes, train_counts))
    eval_metrics, best_metric, best_epoch = None, None, None
    last_good = dict(path=args.resume, epoch=start_epoch - 1) if args.resume else None
    try:
        for epoch in range(start_epoch, num_epochs):
            epoch_lr = optimizer.param_groups[0]['lr']  # the rate this epoch trains at (before the step below)
            random_seed(args.seed + 1000 * epoch, args.rank)  # a resumed run replays this epoch exactly
            sampler.set_epoch(epoch)
            if isinstance(loader_train, InMemoryTrainLoader):
                loader_train.set_epoch(epoch)
            train_loss_fn.set_epoch(epoch)
            if mixup_fn is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
                mixup_fn.mixup_enabled = False
            train_metrics = train_one_epoch(
                epoch, model, loader_train, optimizer, train_loss_fn, device, lr_scheduler=lr_scheduler,
                amp_autocast=amp_autocast, loss_scaler=loss_scaler, model_ema=model_ema, mixup_fn=mixup_fn,
                clip_grad=args.clip_grad, clip_mode=args.clip_mode, pass_target=pass_target,
                channels_last=args.channels_last, num_updates=epoch * updates_per_epoch,
                log_interval=args.log_interval, distributed=args.distributed, frozen_backbone=args.crt)

            last_epoch = epoch + 1 == num_epochs
            epoch_eval = None  # only this epoch's evaluation: a skipped epoch carries no (stale) metric
            if loader_eval is not None and ((epoch + 1) % args.eval_interval == 0 or last_epoch):
                # the shares may differ in length: no DDP wrapper (and its per-forward collectives) in evaluation
                eval_model = model_ema.module if model_ema is not None else unwrap_model(model)
                epoch_eval = eval_metrics = evaluate(
                    eval_model, loader_eval, metrics, device, amp_autocast=amp_autocast,
                    channels_last=args.channels_last, log_interval=args.log_interval)
                _logger.info(_format_metrics(epoch, epoch_eval))
            check_finite_state(epoch, model, model_ema, epoch_eval)  # before anything is saved
            if lr_scheduler is not None:
                lr_scheduler.step(epoch + 1, None if epoch_eval is None else epoch_eval[args.eval_metric])
            if is_main:
                metric = None if epoch_eval is None else epoch_eval[args.eval_metric]
                best_metric, best_epoch = saver.save_checkpoint(epoch, metric=metric)
                last_good = dict(path=os.path.join(output_dir, 'last.pth.tar'), epoch=epoch)
                # after the checkpoint: a run killed in between redoes the epoch and replaces its row
                write_summary_row(os.path.join(output_dir, 'summary.csv'), _summary_row(
                    epoch, epoch_lr, train_metrics, epoch_eval))
    except NonFiniteLossError as e:
        where = (f'The last good checkpoint is {last_good["path"]} (epoch {last_good["epoch"]}).' if last_good
                 else 'No checkpoint was written by this run.')
        _logger.error(f'{e} {where} Lower the learning rate, use gradient clipping (--clip-grad) or check the data.')
        return 2

    if is_main:
        results = dict(model=args.model, epochs=num_epochs, seed=args.seed, best_metric=best_metric,
                       best_epoch=best_epoch, train_info=lt_info.to_dict(), eval=eval_metrics)
        with open(os.path.join(output_dir, 'results.json'), 'w') as f:
            json.dump(results, f, indent=2)
        checkpoint = os.path.join(output_dir, 'last.pth.tar')
        command = [sys.executable, 'validate.py', '--model', args.model, '--checkpoint', checkpoint,
                   '--data-dir', args.data_dir]
        if args.val_list:
            command += ['--val-list', args.val_list]
        elif args.val_split:
            command += ['--split', args.val_split]
        if args.dataset:
            command += ['--dataset', args.dataset]
        _logger.info(f'Done. Checkpoint: {checkpoint}  Summary: {os.path.join(output_dir, "summary.csv")}\n'
                     f'Validate with: {shlex.join(command)}')
    return 0


def _summary_row(epoch, lr, train_metrics, eval_metrics):
    row = dict(epoch=epoch, lr=lr)
    row.update((f'train_{k}', v) for k, v in train_metrics.items())
    row.update((f'eval_{k}', v) for k, v in (eval_metrics or {}).items() if isinstance(v, (int, float)))
    return row


def _one_line(error: Exception) -> str:
    """The message of an error, without the worker traceback that DataLoader embeds in errors raised in workers."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if any('Original Traceback' in line for line in lines):
        return lines[-1].split(': ', 1)[-1]  # the last line: "module.ErrorType: message"
    return ' '.join(lines)


def _format_metrics(epoch, m):
    parts = [f'Eval: epoch {epoch}', f'top1: {m["top1"]:.2f}']
    if m.get('top5') is not None:
        parts.append(f'top5: {m["top5"]:.2f}')
    parts += [f'{k.replace("_", "-")}: {m[k]:.2f}' for k in ('many_shot', 'medium_shot', 'few_shot')
              if m.get(k) is not None]
    classes = m.get('class_groups') or {}
    if classes:
        parts.append('classes ' + ' / '.join(f'{k} {v:.2f}' for k, v in classes.items() if v is not None))
    return '  '.join(parts)


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError, CorruptImageError) as e:  # bad input: the message says what to fix
        _logger.error(f'{type(e).__name__}: {_one_line(e)}')
        sys.exit(2)
