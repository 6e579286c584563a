""" What a publish is made from: the train.py checkpoint, its validate.py metrics, and the label they earn

``load_trained_checkpoint`` reads a checkpoint (EMA or raw weights, chosen explicitly), ``read_metrics`` a
validate.py results JSON, and ``check_metrics`` checks that they describe the same weights. ``resolve_label`` names
the weights (tag, dataset, and whether they are the registry's own) from the checkpoint's training options, never
from the architecture and class count alone:

* A user's run is labelled with a user tag (``'custom'`` unless ``--tag``) and the dataset its options record
  (``--dataset`` / ``--data-dir``, with the imbalance of its class counts).
* A ``timm_camc.weights`` tag (``--official``, or ``--tag`` naming one) is only given to a run whose options are the
  registry recipe's (every option of its ``configs/*.yaml``) and whose training set has the tag's imbalance ratio.
* A requested tag or dataset that contradicts the options (another imbalance ratio or class count) is refused.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import json
import logging
import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
import yaml

import timm
from timm.models import clean_state_dict, split_model_name_tag

from ..layers import HEAD_DEFAULTS
from ..checkpoint import checkpoint_args, read_checkpoint
from ..models import camc_model_kwargs, is_camc_model
from ..weights import DATASETS, Dataset, PretrainedWeights, find_weights

__all__ = [
    'REQUIRED_METRICS', 'SHOT_GROUPS', 'USER_TAG', 'Label', 'TrainedCheckpoint', 'build_trained_model',
    'camc_head_kwargs', 'check_metrics', 'load_trained_checkpoint', 'read_metrics', 'resolve_label',
    'training_data_config',
]

_logger = logging.getLogger(__name__)

USER_TAG = 'custom'  # the tag of a user's own weights when none is given
# validate.py results (timm_camc.metrics.LongTailMetrics.compute with training counts): what a model card is made from
SHOT_GROUPS = ('many_shot', 'medium_shot', 'few_shot')
REQUIRED_METRICS = ('model', 'top1', 'top5', *SHOT_GROUPS, 'per_class', 'num_samples', 'shot_group_sizes')
_DATA_CONFIG_ARGS = ('input_size', 'img_size', 'crop_pct', 'mean', 'std', 'interpolation')
# recipe options that do not change what is trained: a registry weight may differ from its recipe in these
_RECIPE_BOOKKEEPING = frozenset(('log_interval', 'seed'))
_TAG = re.compile(r'[a-z0-9][a-z0-9_]*')


@dataclass
class TrainedCheckpoint:
    """Weights and training options from a train.py checkpoint.

    Attributes:
        path: The checkpoint file.
        arch: Registered model name (without pretrained tag).
        num_classes: Classes of the trained classifier.
        state_dict: The chosen weights (EMA or raw).
        use_ema: Whether ``state_dict`` holds the EMA weights.
        epoch: Last completed epoch, if recorded.
        args: The training options (argparse namespace as a dict).
    """
    path: str
    arch: str
    num_classes: int
    state_dict: Dict[str, torch.Tensor]
    use_ema: bool
    epoch: Optional[int]
    args: Dict[str, Any]


def load_trained_checkpoint(path: str, use_ema: bool, model_name: Optional[str] = None) -> TrainedCheckpoint:
    """Read a train.py checkpoint (timm ``CheckpointSaver`` format) for publishing.

    Args:
        path: ``<run>/last.pth.tar`` or another checkpoint of the run.
        use_ema: Take ``state_dict_ema`` (an error if the run kept no EMA) instead of ``state_dict``.
        model_name: The arch the checkpoint must be (default: the one it was trained as).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a train.py checkpoint of a CAMC model, no EMA weights, or another arch or class count than
            its options say or than ``model_name``.
    """
    try:
        checkpoint = read_checkpoint(path)
    except RuntimeError as e:
        raise ValueError(str(e)) from e
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise ValueError(f'{path} is not a train.py checkpoint (no "state_dict" entry)')
    args = checkpoint_args(checkpoint)

    if use_ema and checkpoint.get('state_dict_ema') is None:
        raise ValueError(f'{path} has no EMA weights (the run did not use --model-ema): publish them with --raw')
    state_dict = clean_state_dict(checkpoint['state_dict_ema' if use_ema else 'state_dict'])

    trained_as = args.get('model') or checkpoint.get('arch')
    # a run that started from 'hf-hub:...' / 'local-dir:...' does not name its arch: --model-name (checked below)
    trained_arch = split_model_name_tag(trained_as)[0] if trained_as and ':' not in trained_as else None
    arch = split_model_name_tag(model_name)[0] if model_name else trained_arch
    if arch is None:
        raise ValueError(f'{path} does not record its architecture: give --model-name')
    if trained_arch is not None and trained_arch != arch:
        raise ValueError(f'{path} was trained as {trained_arch}, not {arch}')
    if not is_camc_model(arch):
        known = ', '.join(m for m in timm.list_models() if is_camc_model(m))
        raise ValueError(f'{arch} is not a timm-camc model (one of {known})')

    classifier = state_dict.get('head.fc.weight')
    if classifier is None:
        raise ValueError(f'{path} has no CAMC classifier (head.fc.weight): not a {arch} checkpoint')
    num_classes = classifier.shape[0]
    if args.get('num_classes') is not None and args['num_classes'] != num_classes:
        raise ValueError(f'{path}: options say {args["num_classes"]} classes, the classifier has {num_classes}')
    counts = args.get('class_counts')
    if counts is not None and len(counts) != num_classes:
        raise ValueError(f'{path}: {len(counts)} class counts for {num_classes} classes')
    return TrainedCheckpoint(
        path=path, arch=arch, num_classes=num_classes, state_dict=state_dict, use_ema=use_ema,
        epoch=checkpoint.get('epoch'), args=args)


def read_metrics(path: str) -> Dict[str, Any]:
    """Read a validate.py results JSON, the one metrics record a model card is made from.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not JSON, or missing any of ``REQUIRED_METRICS`` (all missing fields are named).
    """
    try:
        with open(path, encoding='utf-8') as f:
            metrics = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'Metrics file {path} is not JSON: {e}') from e
    if not isinstance(metrics, dict):
        raise ValueError(f'Metrics file {path} is not a validate.py results object')
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    if missing:
        raise ValueError(f'Metrics file {path} is missing required fields: {", ".join(missing)} '
                         f'(write it with validate.py --results-file)')
    for key in ('top1', 'top5'):
        if not _is_percent(metrics[key]):
            raise ValueError(f'Metrics file {path}: {key}={metrics[key]!r} is not an accuracy in percent')
    for key in SHOT_GROUPS:
        if metrics[key] is not None and not _is_percent(metrics[key]):
            raise ValueError(f'Metrics file {path}: {key}={metrics[key]!r} is not an accuracy in percent or null')
    if not isinstance(metrics['per_class'], list) or not isinstance(metrics['shot_group_sizes'], dict):
        raise ValueError(f'Metrics file {path}: per_class must be a list and shot_group_sizes an object')
    return metrics


def _is_percent(value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and 0 <= value <= 100


def check_metrics(checkpoint: TrainedCheckpoint, metrics: Mapping[str, Any]) -> None:
    """Check that a metrics record was measured on these weights: same arch, class count and weights (EMA / raw).

    Raises:
        ValueError: Naming each disagreement.
    """
    problems = []
    measured = metrics['model']
    if split_model_name_tag(str(measured))[0] != checkpoint.arch:
        problems.append(f'metrics are for model {measured!r}, the checkpoint is {checkpoint.arch}')
    if len(metrics['per_class']) != checkpoint.num_classes:
        problems.append(f'metrics have {len(metrics["per_class"])} classes, the checkpoint {checkpoint.num_classes}')
    if metrics.get('class_counts') is not None and checkpoint.args.get('class_counts') is not None \
            and list(metrics['class_counts']) != list(checkpoint.args['class_counts']):
        problems.append('metrics were grouped with other training class counts than the checkpoint records')
    if metrics.get('use_ema') is not None and bool(metrics['use_ema']) != checkpoint.use_ema:
        measured_on = 'EMA' if metrics['use_ema'] else 'raw'
        chosen = 'EMA' if checkpoint.use_ema else 'raw'
        problems.append(f'metrics were measured on the {measured_on} weights, publishing the {chosen} weights')
    if metrics.get('tau_norm') is not None:
        problems.append(f'metrics were measured after tau-normalisation (tau={metrics["tau_norm"]}), which the '
                        f'checkpoint does not hold')
    if problems:
        raise ValueError('Metrics do not describe this checkpoint: ' + '; '.join(problems))
    measured_file = os.path.basename(str(metrics.get('checkpoint') or ''))
    if measured_file and measured_file != os.path.basename(checkpoint.path):
        _logger.warning(f'The metrics were measured on a checkpoint named {measured_file}, publishing '
                        f'{os.path.basename(checkpoint.path)}: make sure they hold the same weights')


# ------------------------------------------------------------------------------------------------------- labels

@dataclass
class Label:
    """What published weights are called and claim.

    Attributes:
        tag: Pretrained tag (``'<arch>.<tag>'``).
        dataset: The dataset they were trained on, as the card names it.
        record: The ``timm_camc.weights`` record these weights are (checked against the run); None for a user's own.
        recipe: The repository config the run was configured from (``configs/<name>.yaml``), if any.
    """
    tag: str
    dataset: Dataset
    record: Optional[PretrainedWeights] = None
    recipe: Optional[str] = None

    @property
    def official(self) -> bool:
        return self.record is not None


def imbalance_ratio(args: Mapping[str, Any]) -> Optional[float]:
    """The training set's imbalance ratio (most / fewest images per class) from its recorded class counts."""
    counts = args.get('class_counts')
    if not counts:
        return None
    return max(counts) / max(min(counts), 1)


def config_recipe(args: Mapping[str, Any]) -> Optional[str]:
    """The repository recipe (``configs/<name>.yaml``) the run was configured with (``-c``), if any."""
    config = args.get('config')
    return f'configs/{os.path.basename(config)}' if config and str(config).endswith('.yaml') else None


def _tag_ratio(tag: str) -> Optional[int]:
    match = re.search(r'_r(\d+)$', tag)
    return int(match.group(1)) if match else None


def _ratio_problems(what: str, ratio: Optional[int], args: Mapping[str, Any], requested: bool = True) -> List[str]:
    """Where the run's imbalance (class counts and, if ``requested``, --lt-imbalance) contradicts ``what``'s ratio."""
    if ratio is None:
        return []
    problems = []
    requested = args.get('lt_imbalance') if requested else None
    if requested is not None and float(requested) != float(ratio):
        problems.append(f'{what} is for imbalance ratio {ratio}, the run used --lt-imbalance {requested}')
    measured = imbalance_ratio(args)
    if measured is not None and round(measured) != ratio:
        problems.append(f'{what} is for imbalance ratio {ratio}, the run\'s class counts have ratio {measured:.0f}')
    return problems


def _same(value: Any, expected: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(value) == len(expected) and all(_same(v, e) for v, e in zip(value, expected))
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (value, expected))
    if numbers:
        return float(value) == float(expected)
    return str(value) == str(expected)  # recipe_args give strings


def _recipe_options(record: PretrainedWeights, repo_root: str) -> Dict[str, Any]:
    """Every train.py option the registry recipe sets: its config's, then its ``recipe_args``."""
    path = Path(repo_root) / record.recipe
    if not path.is_file():
        raise ValueError(f'{record.name}: its recipe {record.recipe} is not in {repo_root}, so the run cannot be '
                         f'checked against it')
    options = dict(yaml.safe_load(path.read_text(encoding='utf-8')) or {})
    words = shlex.split(record.recipe_args)
    for flag, value in zip(words[::2], words[1::2]):
        options[flag.lstrip('-').replace('-', '_')] = value
    return options


def _check_registry_run(checkpoint: TrainedCheckpoint, record: PretrainedWeights, repo_root: str) -> None:
    """Refuse to give a registry tag to a run that is not its recipe (options, class count, imbalance)."""
    if record.num_classes != checkpoint.num_classes:
        raise ValueError(f'{record.name} has {record.num_classes} classes, the checkpoint {checkpoint.num_classes}')
    args = checkpoint.args
    problems = []
    for key, expected in _recipe_options(record, repo_root).items():
        if key in _RECIPE_BOOKKEEPING:
            continue
        if key not in args:
            problems.append(f'{key} not recorded (recipe: {expected!r})')
        elif not _same(args[key], expected):
            problems.append(f'{key}={args[key]!r} (recipe: {expected!r})')
    ratio = _tag_ratio(record.tag)
    if ratio is not None and imbalance_ratio(args) is None:
        problems.append('the run records no class counts')
    problems += _ratio_problems(f'tag {record.tag}', ratio, args, requested=False)  # lt_imbalance: a recipe option
    if problems:
        raise ValueError(f'{record.name} names the registry weights trained with {record.recipe_options}, but this '
                         f'run differs: ' + '; '.join(problems))


def _run_dataset(checkpoint: TrainedCheckpoint, name: Optional[str], split: Optional[str]) -> Dataset:
    """The dataset a user's run was trained on: ``name`` (checked against the run), else its recorded options."""
    args, num_classes = checkpoint.args, checkpoint.num_classes
    if name in DATASETS:
        dataset = DATASETS[name]
        if dataset.num_classes != num_classes:
            raise ValueError(f'{name} has {dataset.num_classes} classes, the checkpoint {num_classes}')
        problems = _ratio_problems(f'--dataset {name}', _tag_ratio(name), args)
        if problems:
            raise ValueError('; '.join(problems))
        return dataset
    if name is None:
        source = str(args.get('dataset') or '').split('/')[-1] or os.path.basename(str(args.get('data_dir') or '')
                                                                                  .rstrip('/\\'))
        if not source:
            raise ValueError('The checkpoint records no dataset (--dataset or --data-dir): give --dataset NAME')
        ratio = imbalance_ratio(args)
        name = source if ratio is None or round(ratio) <= 1 else \
            f'{source}, long-tailed training set (imbalance ratio {ratio:.0f})'
    else:
        source = name
    card_id = re.sub(r'[^a-z0-9]+', '-', source.lower()).strip('-')
    return Dataset(name=name, card_id=card_id, num_classes=num_classes, eval_split=split or 'test')


def resolve_label(
        checkpoint: TrainedCheckpoint,
        metrics: Mapping[str, Any],
        *,
        tag: Optional[str] = None,
        dataset: Optional[str] = None,
        official: bool = False,
        repo_root: str = '.',
) -> Label:
    """Name the weights of a checkpoint from its own training options (see the module docstring).

    Args:
        checkpoint: The checkpoint.
        metrics: Its validate.py results (the evaluated split).
        tag: The tag asked for; a ``timm_camc.weights`` tag of the arch makes the label official.
        dataset: A ``DATASETS`` key or a dataset name (default: the registry record's, or the run's options).
        official: The weights are the registry's (the tag is inferred from the arch, class count and ``dataset`` when
            not given).
        repo_root: Where the registry recipes (``configs/*.yaml``) are.

    Raises:
        ValueError: A malformed tag, no registry tag that fits ``official``, or a tag or dataset the run's options
            contradict (all differences named).
    """
    registry = {w.tag: w for w in find_weights(arch=checkpoint.arch)}
    if tag is None and official:
        fits = [t for t, w in registry.items()
                if w.num_classes == checkpoint.num_classes and dataset in (None, w.dataset)]
        if len(fits) != 1:
            raise ValueError(f'Cannot tell which registry weights of a {checkpoint.num_classes}-class '
                             f'{checkpoint.arch} this is (tags that fit: {", ".join(fits) or "none"}): give --tag')
        tag = fits[0]
    tag = tag or USER_TAG
    if not _TAG.fullmatch(tag):
        raise ValueError(f'Tag {tag!r} must be lower-case letters, digits and underscores')
    split = metrics.get('split')
    split = os.path.basename(str(split).rstrip('/')) if split else None
    record = registry.get(tag)
    if record is None:
        if official:
            raise ValueError(f'{checkpoint.arch}.{tag} is not in timm_camc.weights: --official needs one of its tags '
                             f'({", ".join(registry) or "none"})')
        problems = _ratio_problems(f'tag {tag}', _tag_ratio(tag), checkpoint.args)
        if problems:
            raise ValueError('; '.join(problems))
        return Label(tag=tag, dataset=_run_dataset(checkpoint, dataset, split), recipe=config_recipe(checkpoint.args))
    if dataset is not None and dataset != record.dataset:
        raise ValueError(f'{record.name} is trained on {record.dataset}, not {dataset}')
    _check_registry_run(checkpoint, record, repo_root)
    return Label(tag=tag, dataset=DATASETS[record.dataset], record=record, recipe=record.recipe)


# -------------------------------------------------------------------------------------------------------- model

def camc_head_kwargs(model: nn.Module) -> Dict[str, Any]:
    """Every CAMC head option of a CAMC model, as it was created (the defaults filled in).

    Recording all of them (not only those given) in ``config.json`` keeps a published head reproducible if a default
    ever changes. They are read from the model's own record (``head_args``): timm records the kwargs of
    ``create_model`` (``timm.models.get_model_args``) only from 1.0.31, and setup.cfg allows 1.0.29.
    """
    return {name: model.head_args[name] for name in HEAD_DEFAULTS}


def build_trained_model(checkpoint: TrainedCheckpoint, tag: str) -> nn.Module:
    """The model of a checkpoint with its weights loaded (strictly), in eval mode, on the CPU.

    The model is created under ``<arch>.<tag>`` when timm knows that tag, so its pretrained config (data config,
    licence, paper) is the registry's; otherwise under the arch's default config with ``tag`` set.

    Raises:
        ValueError: The weights do not fit the arch with the head options the checkpoint records.
    """
    name = f'{checkpoint.arch}.{tag}'
    known = name in timm.list_pretrained(f'{checkpoint.arch}.*')
    model = timm.create_model(
        name if known else checkpoint.arch,
        num_classes=checkpoint.num_classes,
        pretrained_cfg_overlay=None if known else dict(tag=tag, hf_hub_id=None),
        **camc_model_kwargs(checkpoint.arch, checkpoint.args),
    )
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(f'{checkpoint.path} does not fit {checkpoint.arch} with its recorded head options: {e}') from e
    return model.eval()


def training_data_config(args: Mapping[str, Any]) -> Dict[str, Any]:
    """The preprocessing options the run set explicitly (mean, std, sizes, crop, interpolation)."""
    return {k: args[k] for k in _DATA_CONFIG_ARGS if args.get(k) not in (None, '', [])}
