""" Pretrained weights of the CAMC models, as data

One typed record per planned or published weight (torchvision's ``Weights`` idea): where it lives on the Hugging Face
Hub, what it was trained on, the recipe that trains it, its status, and once published its metrics and the sha256 of
its ``model.safetensors``. The README model table (``markdown_model_table``), the model cards written by
``hub/publish.py``, the pretrained loader (``timm_camc.pretrained``) and the tests all read these records.

Every non-backbone tag of ``default_cfgs`` in ``timm_camc/models/camc_resnet.py`` has exactly one record here (a test
checks both directions). A record is ``'recipe only'`` (no weights yet: no metrics, nothing invented), ``'staged'``
(trained and exported by ``hub/publish.py`` into ``hub/staged/<arch>.<tag>/`` in the repository, with its measured
metrics and sha256, not yet uploaded to the Hub) or ``'published'``. After exporting or publishing, ``hub/publish.py``
prints the record to put here.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional

__all__ = [
    'DATASETS', 'HUB_ORG', 'METRIC_KEYS', 'STATUSES', 'WEIGHTS', 'Dataset', 'PretrainedWeights',
    'find_weights', 'format_accuracy', 'get_weights', 'list_weights', 'markdown_model_table',
]

HUB_ORG = 'timm-camc'  # the Hugging Face Hub organisation of our weights: '<HUB_ORG>/<arch>.<tag>'
METRIC_KEYS = ('top1', 'many', 'medium', 'few')  # top-1 and many / medium / few-shot accuracy, in percent
STATUSES = ('published', 'staged', 'recipe only')
STAGED_ROOT = 'hub/staged'  # staged weights: '<STAGED_ROOT>/<arch>.<tag>/' in the repository

_HUB_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*')
_TAG = re.compile(r'[a-z0-9][a-z0-9_]*')
_SHA256 = re.compile(r'[0-9a-f]{64}')
_RECIPE = re.compile(r'configs/[\w.-]+\.yaml')


@dataclass(frozen=True)
class Dataset:
    """A long-tailed benchmark a weight is trained and evaluated on.

    Attributes:
        name: Display name (README table, model card).
        card_id: Identifier for the ``datasets`` list of a model card's metadata.
        num_classes: Number of classes.
        eval_split: The split the reported metrics are measured on.
    """
    name: str
    card_id: str
    num_classes: int
    eval_split: str = 'test'


DATASETS: Dict[str, Dataset] = {
    'cifar10_lt_r100': Dataset('CIFAR-10-LT (imbalance ratio 100)', 'cifar10-lt', 10),
    'cifar100_lt_r100': Dataset('CIFAR-100-LT (imbalance ratio 100)', 'cifar100-lt', 100),
    'imagenet_lt': Dataset('ImageNet-LT', 'imagenet-lt', 1000),
    'inat2018': Dataset('iNaturalist 2018', 'inaturalist-2018', 8142, eval_split='val'),
    'places_lt': Dataset('Places-LT', 'places-lt', 365),
}


@dataclass(frozen=True)
class PretrainedWeights:
    """One pretrained weight of a CAMC model: planned (``'recipe only'``), ``'staged'`` or ``'published'``.

    The record is validated on construction: a staged or published weight needs its metrics and file hash, a planned
    one has neither (nothing is invented before a weight exists).

    Attributes:
        arch: Registered model name, e.g. ``'resnet32_camc_lt'``.
        tag: Pretrained tag, e.g. ``'cifar10_lt_r100'``; ``timm.create_model(f'{arch}.{tag}', pretrained=True)``.
        hub_id: Hugging Face Hub repository, ``'org/name'``.
        dataset: Key of ``DATASETS``.
        num_classes: Classes of the classifier.
        recipe: The train.py config that trains this weight, relative to the repository root.
        recipe_args: Options to add to that config's (e.g. another ``--model``), '' for none.
        status: ``'published'``, ``'staged'`` (exported into ``staged_dir``, not yet uploaded) or ``'recipe only'``.
        metrics: ``METRIC_KEYS`` -> accuracy in percent (None for an empty many / medium / few group), measured on
            the dataset's ``eval_split``; None until staged.
        sha256: Hex digest of the exported ``model.safetensors``; None until staged.
    """
    arch: str
    tag: str
    hub_id: str
    dataset: str
    num_classes: int
    recipe: str
    recipe_args: str = ''
    status: str = 'recipe only'
    metrics: Optional[Mapping[str, Optional[float]]] = field(default=None, hash=False)
    sha256: Optional[str] = None

    def __post_init__(self):
        problems = _record_problems(self)
        if problems:
            raise ValueError(f'Invalid weights record {self.arch}.{self.tag}: ' + '; '.join(problems))

    @property
    def name(self) -> str:
        """``'<arch>.<tag>'``, the name to pass to ``timm.create_model``."""
        return f'{self.arch}.{self.tag}'

    @property
    def published(self) -> bool:
        return self.status == 'published'

    @property
    def trained(self) -> bool:
        """Weights exist (staged or published): the record carries their metrics and sha256."""
        return self.status in ('published', 'staged')

    @property
    def staged_dir(self) -> str:
        """Where ``hub/publish.py --out`` stages the weights in the repository (relative to its root)."""
        return f'{STAGED_ROOT}/{self.name}'

    @property
    def recipe_options(self) -> str:
        """The train.py options of the recipe: ``-c <config>`` and ``recipe_args``."""
        return ' '.join(filter(None, (f'-c {self.recipe}', self.recipe_args)))

    def train_command(self) -> str:
        """The train.py command line that trains this weight."""
        return f'python train.py {self.recipe_options} --data-dir <DATA_DIR>'

    def to_python(self, indent: int = 4) -> str:
        """The record as Python source, for pasting into ``WEIGHTS``."""
        pad = ' ' * indent
        lines = [f'{pad}PretrainedWeights(']
        for key in ('arch', 'tag', 'hub_id', 'dataset', 'num_classes', 'recipe', 'recipe_args', 'status'):
            if key != 'recipe_args' or self.recipe_args:
                lines.append(f'{pad}    {key}={getattr(self, key)!r},')
        if self.metrics is not None:
            metrics = ', '.join(f'{k}={self.metrics[k]!r}' for k in METRIC_KEYS)
            lines.append(f'{pad}    metrics=dict({metrics}),')
        if self.sha256 is not None:
            lines.append(f'{pad}    sha256={self.sha256!r},')
        lines.append(f'{pad}),')
        return '\n'.join(lines)


def _record_problems(record: PretrainedWeights) -> List[str]:
    problems = []
    if record.status not in STATUSES:
        problems.append(f'status must be one of {STATUSES}, got {record.status!r}')
    if not _TAG.fullmatch(record.tag):
        problems.append(f'tag {record.tag!r} must be lower-case letters, digits and underscores')
    if not _HUB_ID.fullmatch(record.hub_id):
        problems.append(f'hub_id {record.hub_id!r} is not "org/name"')
    dataset = DATASETS.get(record.dataset)
    if dataset is None:
        problems.append(f'unknown dataset {record.dataset!r} (add it to DATASETS)')
    elif dataset.num_classes != record.num_classes:
        problems.append(f'{record.dataset} has {dataset.num_classes} classes, the record {record.num_classes}')
    if not _RECIPE.fullmatch(record.recipe):
        problems.append(f'recipe {record.recipe!r} is not a configs/*.yaml path')
    if record.trained:
        if record.metrics is None or set(record.metrics) != set(METRIC_KEYS):
            problems.append(f'a {record.status} weight needs metrics with exactly {METRIC_KEYS}')
        else:
            for key, value in record.metrics.items():
                if value is None and key == 'top1':
                    problems.append('metrics top1 is required')
                elif value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 100):
                    problems.append(f'metrics {key}={value!r} is not a percentage')
        if record.sha256 is None or not _SHA256.fullmatch(record.sha256):
            problems.append(f'a {record.status} weight needs the sha256 (64 lower-case hex digits) of its '
                            f'model.safetensors')
    elif record.metrics is not None or record.sha256 is not None:
        problems.append('a weight that is only a recipe has no metrics and no sha256')
    return problems


def _planned(arch: str, tag: str, recipe: str, recipe_args: str = '') -> PretrainedWeights:
    return PretrainedWeights(
        arch=arch, tag=tag, hub_id=f'{HUB_ORG}/{arch}.{tag}', dataset=tag, num_classes=DATASETS[tag].num_classes,
        recipe=recipe, recipe_args=recipe_args, status='recipe only')


WEIGHTS: Dict[str, PretrainedWeights] = {w.name: w for w in (
    # CAMC global + logit adjustment, seed 0, 200 epochs on a 2-core CPU (bf16); validate.py fp32 on the test split
    PretrainedWeights(
        arch='resnet32_camc_lt',
        tag='cifar10_lt_r100',
        hub_id='timm-camc/resnet32_camc_lt.cifar10_lt_r100',
        dataset='cifar10_lt_r100',
        num_classes=10,
        recipe='configs/cifar10_lt_r100.yaml',
        status='staged',
        metrics=dict(top1=70.32, many=74.46, medium=53.75, few=None),
        sha256='e5536d94ed143e873f6dab6bce8a2014187ed76eb848ba3caeaf1b5b6f60953c',
    ),
    _planned('resnet32_camc_lt', 'cifar100_lt_r100', 'configs/cifar100_lt_r100.yaml'),
    _planned('resnet50_camc_lt', 'imagenet_lt', 'configs/imagenet_lt_resnext50.yaml', '--model resnet50_camc_lt'),
    _planned('resnet50_camc_lt', 'inat2018', 'configs/inat2018_resnet50.yaml'),
    _planned('resnext50_camc_lt', 'imagenet_lt', 'configs/imagenet_lt_resnext50.yaml'),
    _planned('resnet152_camc_lt', 'places_lt', 'configs/places_lt_resnet152.yaml'),
)}


def list_weights(status: Optional[str] = None) -> List[PretrainedWeights]:
    """All records (optionally only those of one status), in registry order."""
    if status is not None and status not in STATUSES:
        raise ValueError(f'status must be one of {STATUSES}, got {status!r}')
    return [w for w in WEIGHTS.values() if status is None or w.status == status]


def get_weights(name: str) -> PretrainedWeights:
    """The record of ``'<arch>.<tag>'``.

    Raises:
        KeyError: No such record, listing the known names.
    """
    try:
        return WEIGHTS[name]
    except KeyError:
        raise KeyError(f'No weights record {name!r}; known: {", ".join(WEIGHTS)}') from None


def find_weights(arch: Optional[str] = None, hub_id: Optional[str] = None) -> Iterator[PretrainedWeights]:
    """Records of one arch and/or Hub repository."""
    for w in WEIGHTS.values():
        if (arch is None or w.arch == arch) and (hub_id is None or w.hub_id == hub_id):
            yield w


def format_accuracy(value: Optional[float]) -> str:
    """An accuracy in percent as tables show it: two decimals, '-' for an empty group."""
    return '-' if value is None else f'{value:.2f}'


def markdown_model_table(weights: Optional[List[PretrainedWeights]] = None) -> str:
    """The README model table: arch, tag, dataset, top-1, many / medium / few-shot accuracy, status."""
    weights = list(WEIGHTS.values()) if weights is None else weights
    rows = [
        '| model | tag | dataset | classes | top-1 | many | medium | few | status |',
        '|---|---|---|---:|---:|---:|---:|---:|---|',
    ]
    for w in weights:
        metrics = w.metrics or {}
        if w.published:
            status = f'published ([{w.hub_id}](https://huggingface.co/{w.hub_id}))'
        elif w.status == 'staged':
            status = f'staged, not yet uploaded ([`{w.staged_dir}`]({w.staged_dir}/README.md))'
        else:
            status = f'recipe only (`{w.recipe_options}`)'
        cells = [f'`{w.arch}`', f'`{w.tag}`', DATASETS[w.dataset].name, str(w.num_classes)]
        cells += [format_accuracy(metrics.get(k)) for k in METRIC_KEYS] + [status]
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows) + '\n'
