""" Hugging Face Hub: publish trained CAMC weights with model cards, and load them safely

Publishing (``hub/publish.py`` is the command line over these):
    ``load_trained_checkpoint`` (a train.py checkpoint, EMA or raw weights chosen explicitly) and ``read_metrics``
    (a validate.py results JSON) are checked against each other (``check_metrics``), ``build_trained_model``
    rebuilds the model, ``export_folder`` writes the Hub folder (``model.safetensors``, timm's ``config.json`` with
    the CAMC head in ``model_args`` and the weights' sha256, and a ``README.md`` model card) and ``push_folder``
    uploads it as one commit, refusing to replace published weights unless forced.

Loading:
    ``timm.create_model('<arch>.<tag>' | 'hf-hub:<org>/<repo>' | 'local-dir:<dir>', pretrained=True)`` is timm's
    own loader. The CAMC models' factory calls ``prepare_pretrained`` first, which for weights on the Hub
    downloads ``model.safetensors`` only (a repository that offers just a pickle is refused unless
    ``TIMM_CAMC_ALLOW_PICKLE=1``), checks it against the sha256 recorded in the repository's ``config.json`` (and in
    ``timm_camc.weights`` for published tags), and turns "repository / file not found" for our planned tags into a
    ``WeightsNotPublishedError`` naming the recipe that trains them. ``verify_weights`` checks a repository or
    folder against both recorded hashes (config and model card) on demand.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import hashlib
import inspect
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import yaml
from huggingface_hub import EvalResult, HfApi, ModelCardData, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError,
)
from huggingface_hub.utils import HFValidationError, validate_repo_id as _hf_validate_repo_id
from safetensors.torch import save_file

import timm
from timm.models import is_model, resolve_pretrained_cfg, split_model_name_tag
from timm.models._builder import _resolve_pretrained_source
from timm.models._helpers import clean_state_dict
from timm.models._hub import hf_split, save_config_for_hf

from .utils import CAMC_MODEL_KWARGS, camc_model_kwargs, checkpoint_args, read_checkpoint
from .version import __version__
from .weights import (
    DATASETS, HUB_ORG, METRIC_KEYS, WEIGHTS, Dataset, PretrainedWeights, find_weights, format_accuracy,
)

__all__ = [
    'ALLOW_PICKLE_ENV', 'CARD_FILE', 'CONFIG_FILE', 'PICKLE_FILE', 'REQUIRED_METRICS', 'SHA256_KEY', 'WEIGHTS_FILE',
    'PretrainedWeightsError', 'WeightsNotPublishedError', 'UnsafeWeightsError', 'WeightsIntegrityError',
    'WeightsExistError', 'TrainedCheckpoint', 'Export',
    'load_trained_checkpoint', 'read_metrics', 'check_metrics', 'resolve_tag', 'resolve_dataset', 'build_trained_model',
    'camc_head_kwargs', 'training_data_config', 'model_card', 'export_folder', 'validate_repo_id', 'push_folder',
    'sha256_file', 'read_card_sha256', 'verify_weights', 'prepare_pretrained',
]

_logger = logging.getLogger(__name__)

WEIGHTS_FILE = 'model.safetensors'
PICKLE_FILE = 'pytorch_model.bin'
CONFIG_FILE = 'config.json'
CARD_FILE = 'README.md'
SHA256_KEY = 'weights_sha256'  # config.json: {filename: sha256 hex digest}
ALLOW_PICKLE_ENV = 'TIMM_CAMC_ALLOW_PICKLE'

# validate.py results: the fields a model card is made from
REQUIRED_METRICS = ('model', 'top1', 'top5', 'many', 'medium', 'few', 'per_class', 'num_samples', 'group_sizes')
# train.py options that describe the machine or the run's bookkeeping, not the recipe: left out of model cards
_LOCAL_ARGS = frozenset((
    'config', 'data_dir', 'dataset_download', 'output', 'experiment', 'resume', 'no_resume_opt', 'initial_checkpoint',
    'pretrained_path', 'device', 'workers', 'pin_mem', 'no_prefetcher', 'local_rank', 'rank', 'world_size',
    'distributed', 'log_interval', 'checkpoint_hist', 'class_names', 'class_counts',
))
_DATA_CONFIG_ARGS = ('input_size', 'img_size', 'crop_pct', 'mean', 'std', 'interpolation')
_CITATION = """@article{zhang2021camc,
  title={Calibrating Class Activation Maps for Long-Tailed Visual Recognition},
  author={Zhang, Chi and Lin, Guosheng and Lai, Lvlong and Ding, Henghui and Wu, Qingyao},
  journal={arXiv preprint arXiv:2108.12757},
  year={2021}
}"""


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights cannot be loaded (not published, not downloadable, unsafe or corrupt)."""


class WeightsNotPublishedError(PretrainedWeightsError):
    """The weights of a tag are planned (a recipe exists) but not on the Hub."""


class UnsafeWeightsError(PretrainedWeightsError):
    """Only pickle weights are offered and pickle was not allowed."""


class WeightsIntegrityError(PretrainedWeightsError):
    """Weights do not match their recorded sha256."""


class WeightsExistError(RuntimeError):
    """The Hub repository already holds weights and replacing them was not asked for."""


# ---------------------------------------------------------------------------------------------- checkpoints, metrics

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
    if not is_model(arch) or '_camc_' not in arch:
        raise ValueError(f'{arch} is not a timm-camc model (one of {", ".join(timm.list_models("*_camc_*"))})')

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
    for key in ('many', 'medium', 'few'):
        if metrics[key] is not None and not _is_percent(metrics[key]):
            raise ValueError(f'Metrics file {path}: {key}={metrics[key]!r} is not an accuracy in percent or null')
    if not isinstance(metrics['per_class'], list) or not isinstance(metrics['group_sizes'], dict):
        raise ValueError(f'Metrics file {path}: per_class must be a list and group_sizes an object')
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


def resolve_tag(checkpoint: TrainedCheckpoint, tag: Optional[str] = None) -> str:
    """The pretrained tag to publish under: ``tag``, else the only registry record of this arch and class count.

    Raises:
        ValueError: No tag can be inferred, the tag is malformed, or its registry record disagrees (class count,
            imbalance ratio of the training set).
    """
    if tag is None:
        candidates = [w.tag for w in find_weights(arch=checkpoint.arch) if w.num_classes == checkpoint.num_classes]
        if len(candidates) != 1:
            known = ', '.join(candidates) or 'none'
            raise ValueError(f'Cannot infer the tag of a {checkpoint.num_classes}-class {checkpoint.arch} '
                             f'(registry tags that fit: {known}): give --tag')
        tag = candidates[0]
    if not re.fullmatch(r'[a-z0-9][a-z0-9_]*', tag):
        raise ValueError(f'Tag {tag!r} must be lower-case letters, digits and underscores')
    record = WEIGHTS.get(f'{checkpoint.arch}.{tag}')
    if record is not None and record.num_classes != checkpoint.num_classes:
        raise ValueError(f'{record.name} has {record.num_classes} classes, the checkpoint {checkpoint.num_classes}')
    ratio = re.search(r'_r(\d+)$', tag)
    imbalance = checkpoint.args.get('lt_imbalance')
    if ratio and imbalance and float(imbalance) != float(ratio.group(1)):
        raise ValueError(f'Tag {tag} is for imbalance ratio {ratio.group(1)}, the run used --lt-imbalance {imbalance}')
    return tag


def camc_head_kwargs(model: nn.Module) -> Dict[str, Any]:
    """Every CAMC head kwarg of a model made by ``timm.create_model``: as created, else the constructor's default.

    Recording all of them (not only those given) in ``config.json`` keeps a published head reproducible if a default
    ever changes.
    """
    params = inspect.signature(type(model).__init__).parameters
    given = getattr(model, '_model_args', {})
    return {n: given.get(n, params[n].default) for n in CAMC_MODEL_KWARGS}


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


# ------------------------------------------------------------------------------------------ model card, Hub folder

_CARD_METRICS = (
    ('top1', 'Top-1 accuracy'), ('top5', 'Top-5 accuracy'), ('many', 'Many-shot accuracy'),
    ('medium', 'Medium-shot accuracy'), ('few', 'Few-shot accuracy'),
)
_SECRET_LIKE = re.compile(r'\bhf_[A-Za-z0-9]{20,}\b')


def _plain(value: Any) -> Any:
    """A value YAML can write safely: tuples as lists, anything unusual as its string."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _recipe_options(args: Mapping[str, Any]) -> Dict[str, Any]:
    """The training options that make the recipe: no machine-local paths, bookkeeping or credential-like values."""
    options = {}
    for key, value in sorted(args.items()):
        if key in _LOCAL_ARGS or value is None:
            continue
        if isinstance(value, str) and (os.path.isabs(value) or value.startswith('~') or _SECRET_LIKE.search(value)):
            continue
        options[key] = _plain(value)
    return options


def _split_name(metrics: Mapping[str, Any]) -> Optional[str]:
    """The evaluated split: validate.py's --split, or the file name of its --val-list (never a local path)."""
    split = metrics.get('split')
    return os.path.basename(str(split).rstrip('/')) if split else None


def _recipe_command(record: Optional[PretrainedWeights], checkpoint: TrainedCheckpoint) -> Optional[str]:
    if record is not None:
        return record.train_command()
    recipe = _config_recipe(checkpoint)
    return f'python train.py -c {recipe} --data-dir <DATA_DIR>' if recipe else None


def resolve_dataset(
        name: Optional[str], checkpoint: TrainedCheckpoint, tag: str, metrics: Mapping[str, Any]) -> Dataset:
    """The dataset weights were trained on: a ``DATASETS`` key or a name, default the registry record's.

    Raises:
        ValueError: No dataset given or known, or a known dataset with another class count.
    """
    record = WEIGHTS.get(f'{checkpoint.arch}.{tag}')
    num_classes, split = checkpoint.num_classes, _split_name(metrics)
    if name is None and record is not None:
        name = record.dataset
    if name is None:
        raise ValueError('Which dataset were the weights trained on? Give --dataset '
                         f'(one of {", ".join(DATASETS)} or a name)')
    if name in DATASETS:
        if DATASETS[name].num_classes != num_classes:
            raise ValueError(f'{name} has {DATASETS[name].num_classes} classes, the checkpoint {num_classes}')
        return DATASETS[name]
    card_id = re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')
    return Dataset(name=name, card_id=card_id, num_classes=num_classes, eval_split=split)


def model_card(
        model: nn.Module,
        checkpoint: TrainedCheckpoint,
        metrics: Mapping[str, Any],
        *,
        tag: str,
        hub_id: str,
        dataset: Dataset,
        sha256: str,
        size: int,
        record: Optional[PretrainedWeights] = None,
) -> str:
    """The ``README.md`` model card: metadata (licence, tags, datasets, model-index), usage, metrics, recipe, file
    hash and citation, all from one metrics record and the checkpoint's own options."""
    name = f'{checkpoint.arch}.{tag}'
    cfg = model.pretrained_cfg
    split = _split_name(metrics) or dataset.eval_split
    evals = [
        EvalResult(
            task_type='image-classification', task_name='Long-tailed image classification',
            dataset_type=dataset.card_id, dataset_name=dataset.name, dataset_split=split,
            metric_type='accuracy', metric_name=label, metric_config=key, metric_value=round(float(metrics[key]), 2),
        )
        for key, label in _CARD_METRICS if metrics[key] is not None
    ]
    card_data = ModelCardData(
        library_name='timm', license=cfg.get('license') or 'apache-2.0', pipeline_tag='image-classification',
        tags=['image-classification', 'timm', 'timm-camc', 'long-tailed'], datasets=[dataset.card_id],
        model_name=name, eval_results=evals,
    )
    head = camc_head_kwargs(model)
    args = checkpoint.args
    counts = args.get('class_counts')
    params = sum(p.numel() for p in model.parameters()) / 1e6
    weights = 'exponential moving average (EMA) of the weights' if checkpoint.use_ema else 'raw (non-EMA) weights'
    epoch = '' if checkpoint.epoch is None else f', after epoch {checkpoint.epoch} (0-based)'
    many_t, few_t = metrics.get('many_thresh', 100), metrics.get('few_thresh', 20)
    sizes = metrics.get('group_sizes') or {}

    lines = [
        '---', card_data.to_yaml().rstrip(), '---', '',
        f'# Model card for {name}', '',
        f'A `{checkpoint.arch}` image classifier with a Class Activation Map Calibration (CAMC) head, trained on '
        f'{dataset.name} with timm-camc, a [timm](https://github.com/huggingface/pytorch-image-models) model-zoo '
        f'extension.', '',
        '## Model details', '',
        '- **Model type:** image classification, long-tailed recognition',
        f'- **Architecture:** `{checkpoint.arch}`, {params:.2f} M parameters, {checkpoint.num_classes} classes, '
        f'input {cfg["input_size"][1]}x{cfg["input_size"][2]}',
        '- **CAMC head:** ' + ', '.join(f'`{k}={v!r}`' for k, v in head.items()),
        f'- **Weights:** the {weights}{epoch}',
        f'- **Dataset:** {dataset.name}',
    ]
    if counts:
        lines.append(f'- **Training set:** {sum(counts)} images, {max(counts)} to {min(counts)} per class '
                     f'(imbalance ratio {max(counts) / max(min(counts), 1):.0f})')
    lines += [
        '- **Paper:** [Calibrating Class Activation Maps for Long-Tailed Visual Recognition]'
        '(https://arxiv.org/abs/2108.12757), Zhang et al., 2021. The head is timm-camc\'s reconstruction of it.',
        f'- **Licence:** {card_data.license}',
        '',
        '## Usage', '',
        '```python',
        'import timm',
        'import timm_camc  # registers the CAMC models with timm',
        '',
        f"model = timm.create_model('hf-hub:{hub_id}', pretrained=True).eval()",
    ]
    if record is not None and record.hub_id == hub_id:
        lines.append(f"# or by tag: timm.create_model('{name}', pretrained=True)")
    lines += [
        'data_config = timm.data.resolve_model_data_config(model)',
        'transform = timm.data.create_transform(**data_config, is_training=False)',
        'top5 = model(transform(image).unsqueeze(0)).softmax(-1).topk(5)  # image: a PIL image',
        '',
        '# fine-tuning on N classes: the backbone and the map conv are kept, the classifier and prototypes start fresh',
        f"model = timm.create_model('hf-hub:{hub_id}', pretrained=True, num_classes=N)",
        '```',
        '',
        'The weights are a `model.safetensors` file only; timm-camc refuses pickle weights from the Hub and checks '
        'the file against the sha256 recorded in `config.json` when loading. '
        f'`timm_camc.hub.verify_weights(\'{hub_id}\')` checks it against this card as well.',
        '',
        '## Evaluation', '',
        f'{dataset.name}, `{split}` split, {metrics["num_samples"]} images; accuracy in percent. Many-shot classes '
        f'have more than {many_t} training images, few-shot classes fewer than {few_t}, medium-shot the rest.',
        '',
        '| split | images | top-1 | top-5 | many-shot | medium-shot | few-shot |',
        '|---|---:|---:|---:|---:|---:|---:|',
        f'| {split} | {metrics["num_samples"]} | ' + ' | '.join(
            format_accuracy(metrics[k]) for k in ('top1', 'top5', 'many', 'medium', 'few')) + ' |',
        f'| classes | {checkpoint.num_classes} | | | {sizes.get("many", "-")} | {sizes.get("medium", "-")} '
        f'| {sizes.get("few", "-")} |',
    ]
    if metrics.get('class_groups'):
        lines += ['', 'Accuracy by class group: ' + ', '.join(
            f'{k} {format_accuracy(v)}' for k, v in metrics['class_groups'].items()) + '.']
    lines += ['', '## Training recipe', '']
    command = _recipe_command(record, checkpoint)
    if command:
        lines += ['```bash', command, '```', '']
    lines += [
        'The options of this run (train.py; machine-specific paths left out):', '',
        '```yaml', yaml.safe_dump(_recipe_options(args), sort_keys=True, default_flow_style=None).rstrip(), '```',
        '',
        '## Files', '',
        f'- `{WEIGHTS_FILE}`: sha256 `{sha256}`, {size} bytes',
        f'- `{CONFIG_FILE}`: timm model config (`model_args` rebuild the CAMC head)',
        '',
        '## Citation', '',
        '```bibtex', _CITATION, '```', '',
    ]
    return '\n'.join(lines)


def read_card_sha256(card: str, filename: str = WEIGHTS_FILE) -> Optional[str]:
    """The sha256 a model card written by ``model_card`` records for ``filename``, or None."""
    match = re.search(rf'`{re.escape(filename)}`: sha256 `([0-9a-f]{{64}})`', card)
    return match.group(1) if match else None


def sha256_file(path: str) -> str:
    """Hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Export:
    """A Hub folder written by ``export_folder``.

    Attributes:
        folder: The folder (``model.safetensors``, ``config.json``, ``README.md``).
        name: ``'<arch>.<tag>'``.
        sha256: Digest of ``model.safetensors``.
        record: The ``timm_camc.weights`` record of these weights once published at ``hub_id`` (None for a
            dataset or recipe the registry cannot describe).
    """
    folder: str
    name: str
    sha256: str
    record: Optional[PretrainedWeights]


def export_folder(
        model: nn.Module,
        checkpoint: TrainedCheckpoint,
        metrics: Mapping[str, Any],
        folder: str,
        *,
        tag: str,
        hub_id: str,
        dataset: Optional[str] = None,
        secrets: Sequence[str] = (),
) -> Export:
    """Write the Hub folder of a trained model: weights, timm config and model card.

    Args:
        model: The trained model (``build_trained_model``).
        checkpoint: Its checkpoint (options, EMA or raw, epoch).
        metrics: Its validate.py results (``read_metrics``, ``check_metrics``).
        folder: An existing, empty folder.
        tag: Pretrained tag.
        hub_id: The Hub repository the folder is meant for (usage lines of the card).
        dataset: A ``DATASETS`` key or a dataset name (default: the registry record's).
        secrets: Strings that must not appear in any written file (e.g. the Hub token); if one does, the folder
            is emptied and an error raised.
    """
    name = f'{checkpoint.arch}.{tag}'
    known = WEIGHTS.get(name)
    data = resolve_dataset(dataset, checkpoint, tag, metrics)
    out = Path(folder)

    weights_path = out / WEIGHTS_FILE
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_path), metadata={'format': 'pt'})
    sha256 = sha256_file(str(weights_path))

    label_names = checkpoint.args.get('class_names') or metrics.get('class_names')
    if label_names is not None and len(label_names) != checkpoint.num_classes:
        _logger.warning(f'{len(label_names)} class names for {checkpoint.num_classes} classes: not recorded')
        label_names = None
    model_config = {SHA256_KEY: {WEIGHTS_FILE: sha256}}
    if label_names:
        model_config['label_names'] = list(label_names)
    save_config_for_hf(
        model, str(out / CONFIG_FILE), model_config=model_config, model_args=camc_head_kwargs(model),
        data_config=training_data_config(checkpoint.args))

    record = None
    dataset_key = dataset if dataset is not None else (known.dataset if known is not None else None)
    recipe, recipe_args = (known.recipe, known.recipe_args) if known is not None else (_config_recipe(checkpoint), '')
    if dataset_key in DATASETS and recipe:
        try:
            record = PretrainedWeights(
                arch=checkpoint.arch, tag=tag, hub_id=hub_id, dataset=dataset_key, num_classes=checkpoint.num_classes,
                recipe=recipe, recipe_args=recipe_args, status='published', sha256=sha256,
                metrics={k: None if metrics[k] is None else round(float(metrics[k]), 2) for k in METRIC_KEYS})
        except ValueError as e:
            _logger.warning(f'No timm_camc.weights record for these weights: {e}')
    card = model_card(model, checkpoint, metrics, tag=tag, hub_id=hub_id, dataset=data, sha256=sha256,
                      size=weights_path.stat().st_size, record=known)
    (out / CARD_FILE).write_text(card, encoding='utf-8')

    for path in out.iterdir():
        if path.suffix in ('.json', '.md') and any(s and s in path.read_text(encoding='utf-8') for s in secrets):
            for written in out.iterdir():
                written.unlink()
            raise RuntimeError(f'A credential would have been written to {path.name}; nothing was exported')
    return Export(folder=str(out), name=name, sha256=sha256, record=record)


def _config_recipe(checkpoint: TrainedCheckpoint) -> Optional[str]:
    """The repository recipe (``configs/<name>.yaml``) the run was configured with, if any."""
    config = checkpoint.args.get('config')
    return f'configs/{os.path.basename(config)}' if config and str(config).endswith('.yaml') else None


# ------------------------------------------------------------------------------------------------------- publishing

def validate_repo_id(repo_id: str) -> str:
    """Check a Hub model repository id is ``'org/name'``.

    Raises:
        ValueError: Saying what is wrong.
    """
    if not isinstance(repo_id, str) or repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise ValueError(f'Repository id {repo_id!r} must be "org/name" (an organisation or user, then the name)')
    try:
        _hf_validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f'Repository id {repo_id!r} is not valid: {e}') from None
    return repo_id


def _git_blob_sha1(path: str) -> str:
    digest = hashlib.sha1()
    digest.update(b'blob %d\0' % os.path.getsize(path))
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _head_commit(api: HfApi, repo_id: str, revision: Optional[str]) -> Optional[str]:
    try:
        return api.repo_info(repo_id, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None


def _remote_weights(api: HfApi, repo_id: str, commit: str) -> Optional[str]:
    """The ETag of the repository's weights at ``commit`` (git blob sha1, or sha256 for LFS), None if absent."""
    url = hf_hub_url(repo_id, WEIGHTS_FILE, revision=commit, endpoint=api.endpoint)
    try:
        return api.get_hf_file_metadata(url=url).etag
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        return None


def push_folder(
        folder: str,
        repo_id: str,
        *,
        token: str,
        revision: Optional[str] = None,
        private: bool = False,
        force: bool = False,
        commit_message: str = 'Upload weights with timm-camc',
        api: Optional[HfApi] = None,
) -> Tuple[str, str]:
    """Upload a Hub folder as one commit, refusing to replace weights unless ``force``.

    The repository (and the branch ``revision``) is created if needed. The check for existing weights and the commit
    are tied together: the commit names the checked head as its parent, so a concurrent push makes it fail rather
    than overwrite. If the repository already holds exactly these weights (a retry after a lost response), nothing
    is uploaded.

    Args:
        folder: The folder to upload (``export_folder``).
        repo_id: ``'org/name'``.
        token: Hub token with write access.
        revision: Branch to commit to, the default branch if None. A missing branch is created from the default
            branch; the weights it inherits are replaced on it without ``force`` (the default branch is unchanged).
        private: Create the repository private (an existing repository keeps its visibility).
        force: Replace weights already in the repository.
        commit_message: Commit title.
        api: The ``HfApi`` client (default: a new one with ``token``).

    Returns:
        ``(commit_url, status)``, status ``'published'`` or ``'unchanged'``.

    Raises:
        WeightsExistError: The repository holds other weights and ``force`` is False (nothing was changed).
        huggingface_hub.errors.HfHubHTTPError: The Hub refused or failed a request (nothing half-published: the
            upload is a single commit, safe to retry).
    """
    validate_repo_id(repo_id)
    api = api or HfApi(token=token, library_name='timm_camc', library_version=__version__)
    local = os.path.join(folder, WEIGHTS_FILE)
    local_ids = {sha256_file(local), _git_blob_sha1(local)}
    where = f'{repo_id}@{revision}' if revision else repo_id

    head = _head_commit(api, repo_id, revision)
    remote = _remote_weights(api, repo_id, head) if head is not None else None
    if remote in local_ids and not force:
        _logger.info(f'{where} already holds these weights ({head})')
        return f'{api.endpoint}/{repo_id}/commit/{head}', 'unchanged'
    if remote is not None and not force:
        raise WeightsExistError(
            f'{where} already has {WEIGHTS_FILE} (other weights): nothing was changed. Pass --force to replace '
            f'them, or publish to another --revision or --repo-id.')

    if head is None:
        # a new repository, or a new branch (made from the default branch: what it inherits is replaced there only)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        head = _head_commit(api, repo_id, revision)
        if revision is None and not force and _remote_weights(api, repo_id, head) not in (None, *local_ids):
            raise WeightsExistError(f'{where} received other weights meanwhile: nothing was uploaded')
    elif private:
        _logger.warning(f'{repo_id} exists: its visibility is left as it is')
    info = api.upload_folder(
        repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message, parent_commit=head)
    return info.commit_url, 'published'


# ----------------------------------------------------------------------------------------------- loading, verifying

def _allow_pickle() -> bool:
    return os.environ.get(ALLOW_PICKLE_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def _recorded_in_config(path: Optional[str], filename: str = WEIGHTS_FILE) -> Optional[str]:
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return (json.load(f).get(SHA256_KEY) or {}).get(filename)


def _check_sha256(path: str, recorded: Mapping[str, Optional[str]], what: str) -> str:
    recorded = {source: digest for source, digest in recorded.items() if digest}
    actual = sha256_file(path)
    wrong = [f'{source} records {digest}' for source, digest in recorded.items() if digest != actual]
    if wrong:
        raise WeightsIntegrityError(
            f'{what}: sha256 of the weights is {actual}, but ' + '; '.join(wrong)
            + '. The file is corrupt or was replaced; delete it from the cache and download it again.')
    return actual


def _try_download(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[str]) -> Optional[str]:
    try:
        return hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir,
            library_name='timm_camc', library_version=__version__)
    except (EntryNotFoundError, OSError):
        # not in the repository, or not reachable: nothing recorded to check against
        return None


def verify_weights(source: str, revision: Optional[str] = None, cache_dir: Optional[str] = None) -> str:
    """Check ``model.safetensors`` against the sha256 its ``config.json`` and model card record.

    Args:
        source: A Hub repository (``'org/name'``, ``'hf-hub:org/name[@revision]'``) or a local folder
            (a path or ``'local-dir:<path>'``).
        revision: Hub revision (branch, tag or commit).
        cache_dir: Hugging Face cache folder.

    Returns:
        The verified sha256.

    Raises:
        WeightsIntegrityError: A recorded hash differs from the file's, or neither file records one.
    """
    if source.startswith('local-dir:') or os.path.isdir(source):
        folder = Path(source.removeprefix('local-dir:'))
        weights, config, card = (folder / f for f in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE))
        if not weights.is_file():
            raise FileNotFoundError(f'No {WEIGHTS_FILE} in {folder}')
        weights, config, card = str(weights), str(config), str(card) if card.is_file() else None
    else:
        repo_id, at = hf_split(source.removeprefix('hf-hub:'))
        revision = revision or at
        weights = hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision, cache_dir=cache_dir,
                                  library_name='timm_camc', library_version=__version__)
        config = _try_download(repo_id, CONFIG_FILE, revision, cache_dir)
        card = _try_download(repo_id, CARD_FILE, revision, cache_dir)
    recorded = {CONFIG_FILE: _recorded_in_config(config)}
    if card:
        recorded[CARD_FILE] = read_card_sha256(Path(card).read_text(encoding='utf-8'))
    if not any(recorded.values()):
        raise WeightsIntegrityError(f'{source}: neither {CONFIG_FILE} nor {CARD_FILE} records a sha256 of the weights')
    return _check_sha256(weights, recorded, source)


def _registry_record(cfg: Mapping[str, Any], repo_id: str) -> Optional[PretrainedWeights]:
    record = WEIGHTS.get(f'{cfg.get("architecture")}.{cfg.get("tag")}')
    if record is not None and record.hub_id == repo_id:
        return record
    return next(find_weights(hub_id=repo_id), None)


def _not_published(name: str, repo_id: str, record: Optional[PretrainedWeights], missing: str) -> str:
    status = f' (status in timm_camc.weights: {record.status})' if record is not None else ''
    how = f'`{record.train_command()}`' if record is not None else 'train.py and publish them with hub/publish.py'
    return (f'Pretrained weights {name} are not published yet: {missing} on the Hugging Face Hub{status}. '
            f'Train them with {how}, or create the model with pretrained=False.')


def prepare_pretrained(variant: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Pre-flight for ``pretrained=True`` loads of the CAMC models, called by their factory before timm loads.

    For weights on the Hugging Face Hub (tags and ``hf-hub:`` ids): downloads ``model.safetensors`` (only; a
    repository that offers just ``pytorch_model.bin`` is refused unless ``TIMM_CAMC_ALLOW_PICKLE=1``), checks its
    sha256 against the one recorded in the repository's ``config.json`` and, for published tags, in
    ``timm_camc.weights``, and pins timm's loader to that file (already cached, so timm does not download it again).
    For ``local-dir:`` folders, checks the recorded sha256. Other sources (``file``, ``url``, ``state_dict``) are left
    to timm.

    Args:
        variant: The model name (arch).
        kwargs: The factory's kwargs (``pretrained_cfg``, ``pretrained_cfg_overlay``, ``cache_dir``, ...).

    Returns:
        ``kwargs``, with ``pretrained_cfg_overlay`` naming the weights file for Hub sources.

    Raises:
        WeightsNotPublishedError: A planned tag (or a ``timm-camc/`` repository) with no weights on the Hub yet.
        UnsafeWeightsError: Only pickle weights are offered.
        WeightsIntegrityError: The weights do not match their recorded sha256.
        PretrainedWeightsError: The weights are neither cached nor downloadable (offline, unreachable Hub).
    """
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay')).to_dict()
    load_from, location = _resolve_pretrained_source(cfg)
    if load_from == 'local-dir':
        folder = Path(location)
        if (folder / WEIGHTS_FILE).is_file():
            recorded = {CONFIG_FILE: _recorded_in_config(str(folder / CONFIG_FILE))}
            _check_sha256(str(folder / WEIGHTS_FILE), recorded, str(folder))
        return kwargs
    if load_from != 'hf-hub':
        return kwargs

    repo_id, revision = hf_split(cfg['hf_hub_id'])
    name = f'{cfg.get("architecture") or variant}.{cfg["tag"]}' if cfg.get('tag') else repo_id
    record = _registry_record(cfg, repo_id)
    filename = cfg.get('hf_hub_filename') or WEIGHTS_FILE
    if not filename.endswith('.safetensors'):
        _require_pickle_opt_in(name, repo_id, filename)
    path = _download_weights(name, repo_id, revision, filename, record, kwargs.get('cache_dir'))
    if path is None:  # the repository has pickle weights only, and they are allowed
        filename = PICKLE_FILE
    else:
        config = _try_download(repo_id, CONFIG_FILE, revision, kwargs.get('cache_dir'))
        recorded = {f'{repo_id}/{CONFIG_FILE}': _recorded_in_config(config, filename)}
        if record is not None and record.published and revision is None and filename == WEIGHTS_FILE:
            recorded['timm_camc.weights'] = record.sha256
        _check_sha256(path, recorded, name)
    kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {}, hf_hub_filename=filename)
    return kwargs


def _require_pickle_opt_in(name: str, repo_id: str, filename: str, cause: Optional[Exception] = None) -> None:
    if not _allow_pickle():
        raise UnsafeWeightsError(
            f'{name}: refusing to load pickle weights ({filename}) from the Hub ({repo_id} has no {WEIGHTS_FILE} to '
            f'use instead, or {filename} was asked for). Set {ALLOW_PICKLE_ENV}=1 to allow them (they are then loaded '
            f'with torch.load(weights_only=True)) if you trust {repo_id}.') from cause
    _logger.warning(f'{name}: loading pickle weights ({filename}) from {repo_id}, as {ALLOW_PICKLE_ENV} allows')


def _download_weights(
        name: str,
        repo_id: str,
        revision: Optional[str],
        filename: str,
        record: Optional[PretrainedWeights],
        cache_dir: Optional[str],
) -> Optional[str]:
    """Download (or find cached) the weights file; None when only pickle weights exist and they are allowed."""
    ours = record is not None or repo_id.split('/')[0] == HUB_ORG
    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                               library_name='timm_camc', library_version=__version__)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        hint = ''
        if record is not None and not record.published:
            hint = f' (and per timm_camc.weights they are not published yet: {record.train_command()})'
        raise PretrainedWeightsError(
            f'Pretrained weights {name} ({repo_id}/{filename}) are not in the local Hugging Face cache and the Hub '
            f'cannot be reached (HF_HUB_OFFLINE is set, or no connection){hint}. Load them once online, or point '
            f'HF_HOME / cache_dir at a cache that has them.') from e
    except EntryNotFoundError as e:
        if filename == WEIGHTS_FILE and HfApi().file_exists(repo_id, PICKLE_FILE, revision=revision):
            _require_pickle_opt_in(name, repo_id, PICKLE_FILE, cause=e)
            return None
        if ours:
            raise WeightsNotPublishedError(_not_published(name, repo_id, record, f'{repo_id} has no {filename}')) from e
        raise
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        if ours:
            revision_missing = isinstance(e, RevisionNotFoundError)
            missing = f'no revision {revision} of {repo_id}' if revision_missing else f'no repository {repo_id}'
            raise WeightsNotPublishedError(_not_published(name, repo_id, record, missing)) from e
        raise
