""" The model card (``README.md``) of published CAMC weights

``huggingface_hub.ModelCard.from_template`` renders the card: the metadata is a ``ModelCardData`` whose
``EvalResult`` list becomes the model-index (the Hub's metrics widget), the body a Jinja template (Jinja2 comes with
torch). Every number comes from one validate.py metrics record and the checkpoint's own training options; the label
(tag, dataset, registry recipe or a user's own run) from ``records.resolve_label``.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import os
import re
from typing import Any, Dict, Mapping, Optional

import torch.nn as nn
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..pretrained import CONFIG_FILE, WEIGHTS_FILE, card_sha256_line
from ..weights import format_accuracy
from .records import SHOT_GROUPS, Label, TrainedCheckpoint, camc_head_kwargs, imbalance_ratio

__all__ = ['model_card']

# train.py options that describe the machine or the run's bookkeeping, not the recipe: left out of model cards
_LOCAL_ARGS = frozenset((
    'config', 'data_dir', 'dataset_download', 'output', 'experiment', 'resume', 'no_resume_opt', 'initial_checkpoint',
    'pretrained_path', 'device', 'workers', 'pin_mem', 'no_prefetcher', 'local_rank', 'rank', 'world_size',
    'distributed', 'log_interval', 'checkpoint_hist', 'class_names', 'class_counts',
))
_CARD_METRICS = (
    ('top1', 'Top-1 accuracy'), ('top5', 'Top-5 accuracy'), ('many_shot', 'Many-shot accuracy'),
    ('medium_shot', 'Medium-shot accuracy'), ('few_shot', 'Few-shot accuracy'),
)
_SECRET_LIKE = re.compile(r'\bhf_[A-Za-z0-9]{20,}\b')
_CITATION = """@article{zhang2021camc,
  title={Calibrating Class Activation Maps for Long-Tailed Visual Recognition},
  author={Zhang, Chi and Lin, Guosheng and Lai, Lvlong and Ding, Henghui and Wu, Qingyao},
  journal={arXiv preprint arXiv:2108.12757},
  year={2021}
}"""

_TEMPLATE = """---
{{ card_data }}
---

# Model card for {{ name }}

A `{{ arch }}` image classifier with a Class Activation Map Calibration (CAMC) head, trained on {{ dataset }} with \
timm-camc, a [timm](https://github.com/huggingface/pytorch-image-models) model-zoo extension.{% if not official %} \
These are a user's own weights, not one of timm-camc's registry weights.{% endif %}

## Model details

- **Model type:** image classification, long-tailed recognition
- **Architecture:** `{{ arch }}`, {{ params }} M parameters, {{ num_classes }} classes, input {{ input_size }}
- **CAMC head:** {{ head }}
- **Weights:** the {{ weights }}
- **Dataset:** {{ dataset }}
{% if training_set %}- **Training set:** {{ training_set }}
{% endif %}- **Paper:** [Calibrating Class Activation Maps for Long-Tailed Visual Recognition]\
(https://arxiv.org/abs/2108.12757), Zhang et al., 2021. The head is timm-camc's reconstruction of it.
- **Licence:** {{ license }}

## Usage

```python
import timm
import timm_camc  # registers the CAMC models with timm

model = timm.create_model('hf-hub:{{ hub_id }}', pretrained=True).eval()
{% if by_tag %}# or by tag: timm.create_model('{{ name }}', pretrained=True)
{% endif %}data_config = timm.data.resolve_model_data_config(model)
transform = timm.data.create_transform(**data_config, is_training=False)
top5 = model(transform(image).unsqueeze(0)).softmax(-1).topk(5)  # image: a PIL image

# fine-tuning on N classes: the backbone and the map conv are kept, the classifier and prototypes start fresh
model = timm.create_model('hf-hub:{{ hub_id }}', pretrained=True, num_classes=N)
```

The weights are a `model.safetensors` file only; timm-camc refuses pickle weights and checks the file against the \
sha256 recorded in `config.json` when loading. `timm_camc.pretrained.verify_weights('{{ hub_id }}')` checks it \
against this card as well.

## Evaluation

{{ dataset }}, `{{ split }}` split, {{ num_samples }} images; accuracy in percent. Many-shot classes have more than \
{{ many_thresh }} training images, few-shot classes fewer than {{ few_thresh }}, medium-shot the rest.

| split | images | top-1 | top-5 | many-shot | medium-shot | few-shot |
|---|---:|---:|---:|---:|---:|---:|
| {{ split }} | {{ num_samples }} | {{ accuracy | join(' | ') }} |
| classes | {{ num_classes }} | | | {{ sizes.many_shot }} | {{ sizes.medium_shot }} | {{ sizes.few_shot }} |
{% if class_groups %}
Accuracy by class group: {{ class_groups }}.
{% endif %}{% if notes %}
## Notes

{{ notes }}
{% endif %}
## Training recipe

{% if command %}```bash
{{ command }}
```

The options of this run (train.py; machine-specific paths left out):
{% elif recipe %}Configured from `{{ recipe }}` (train.py `-c`), with the options below taking precedence (train.py; \
machine-specific paths left out):
{% else %}The options of this run (train.py; machine-specific paths left out):
{% endif %}
```yaml
{{ options }}
```

## Files

{{ weights_line }}
- `{{ config_file }}`: timm model config (`model_args` rebuild the CAMC head)

## Citation

```bibtex
{{ citation }}
```
"""


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


def model_card(
        model: nn.Module,
        checkpoint: TrainedCheckpoint,
        metrics: Mapping[str, Any],
        *,
        label: Label,
        hub_id: Optional[str],
        sha256: str,
        size: int,
        notes: Optional[str] = None,
) -> ModelCard:
    """The model card: metadata (licence, tags, datasets, model-index), usage, metrics, recipe, file hash, citation.

    Args:
        model: The published model (its pretrained config gives licence and input size).
        checkpoint: Its checkpoint (training options, EMA or raw, epoch).
        metrics: Its validate.py results.
        label: Tag, dataset and registry record (``records.resolve_label``).
        hub_id: The repository the card is for; None writes a placeholder (a folder not yet meant for one).
        sha256: Digest of ``model.safetensors``.
        size: Its size in bytes.
        notes: Markdown for a "Notes" section after the evaluation (how the weights were made, what they compare
            to), or None.
    """
    name = f'{checkpoint.arch}.{label.tag}'
    dataset = label.dataset
    cfg = model.pretrained_cfg
    split = metrics.get('split')
    split = os.path.basename(str(split).rstrip('/')) if split else dataset.eval_split
    card_data = ModelCardData(
        library_name='timm', license=cfg.get('license') or 'apache-2.0', pipeline_tag='image-classification',
        tags=['image-classification', 'timm', 'timm-camc', 'long-tailed'], datasets=[dataset.card_id],
        model_name=name,
        eval_results=[
            EvalResult(
                task_type='image-classification', task_name='Long-tailed image classification',
                dataset_type=dataset.card_id, dataset_name=dataset.name, dataset_split=split,
                metric_type='accuracy', metric_name=title, metric_config=key,
                metric_value=round(float(metrics[key]), 2),
            )
            for key, title in _CARD_METRICS if metrics[key] is not None
        ],
    )
    args = checkpoint.args
    counts = args.get('class_counts')
    training_set = None
    if counts:
        training_set = (f'{sum(counts)} images, {max(counts)} to {min(counts)} per class (imbalance ratio '
                        f'{imbalance_ratio(args):.0f})')
    epoch = '' if checkpoint.epoch is None else f', after epoch {checkpoint.epoch} (0-based)'
    weights = 'exponential moving average (EMA) of the weights' if checkpoint.use_ema else 'raw (non-EMA) weights'
    sizes = metrics.get('shot_group_sizes') or {}
    groups = metrics.get('class_groups')
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        name=name,
        arch=checkpoint.arch,
        official=label.official,
        dataset=dataset.name,
        params=f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}',
        num_classes=checkpoint.num_classes,
        input_size=f'{cfg["input_size"][1]}x{cfg["input_size"][2]}',
        head=', '.join(f'`{k}={v!r}`' for k, v in camc_head_kwargs(model).items()),
        weights=weights + epoch,
        training_set=training_set,
        hub_id=hub_id or f'<your-name>/{name}',
        by_tag=label.official and label.record.hub_id == hub_id,
        split=split,
        num_samples=metrics['num_samples'],
        many_thresh=metrics.get('many_thresh', 100),
        few_thresh=metrics.get('few_thresh', 20),
        accuracy=[format_accuracy(metrics[k]) for k in ('top1', 'top5', *SHOT_GROUPS)],
        sizes={k: sizes.get(k, '-') for k in SHOT_GROUPS},
        class_groups=', '.join(f'{k} {format_accuracy(v)}' for k, v in groups.items()) if groups else None,
        command=label.record.train_command() if label.official else None,
        recipe=label.recipe,
        options=yaml.safe_dump(_recipe_options(args), sort_keys=True, default_flow_style=None).rstrip(),
        weights_line=card_sha256_line(WEIGHTS_FILE, sha256, size),
        config_file=CONFIG_FILE,
        citation=_CITATION,
        notes=notes.strip() if notes else None,
    )
