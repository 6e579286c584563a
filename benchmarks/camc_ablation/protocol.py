"""The CIFAR-10-LT benchmark protocol: the defaults of the ablation and what a 'full' result must match."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = 'resnet32_camc_lt'
CIFAR10_CLASSES = 10  # the default data's class count (a --data-dir tree brings its own)
IMG_SIZE = 32  # the default --img-size: CIFAR's, at which the JPEGs are decoded without resizing
FULL_TRAIN_PER_CLASS = 5000  # CIFAR-10 train images per class: n_max of the long-tailed profile
FULL_TEST_PER_CLASS = 1000
FULL_EPOCHS = 200
BENCHMARK_RECIPE = dict(lr=0.1, momentum=0.9, weight_decay=2e-4, batch_size=128, nesterov=False)
PAD = 4  # zero padding before the random crop
RECIPE_CONFIG = REPO / 'configs' / 'cifar10_lt_r100.yaml'  # the schedule train.py runs, which the ablation scales


def full_profile(data) -> bool:
    """Whether a run's data (a record's ``data``) has the full long-tailed profile: largest class 5000, 1000 test
    images per class, the fixed subset seed; of CIFAR-10-LT or of any ``--data-dir`` dataset."""
    return (data.get('train_per_class_max') == FULL_TRAIN_PER_CLASS
            and data.get('test_per_class') == FULL_TEST_PER_CLASS and data.get('lt_seed') == 0)
