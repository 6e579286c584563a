""" The staged registry weights in hub/staged/: their record, their folder, and that they reproduce their card

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import timm
import timm_camc  # noqa: F401 (registers the models)
from timm_camc import pretrained as camc_pretrained
from timm_camc.pretrained import CONFIG_FILE, WEIGHTS_FILE, read_card_sha256, sha256_file
from timm_camc.weights import list_weights

from conftest import CIFAR10_CLASSES, extract_cifar10_subset

REPO = Path(__file__).resolve().parent.parent
STAGED = list_weights('staged')
TEST_IMAGES_PER_CLASS = 1000  # the whole CIFAR-10 test split


def test_staged_weights_exist():
    # the zoo has at least the CIFAR-10-LT weights; a record without its folder would fail the tests below
    assert 'resnet32_camc_lt.cifar10_lt_r100' in [w.name for w in STAGED]


@pytest.mark.parametrize('record', STAGED, ids=lambda w: w.name)
def test_staged_folder_matches_its_record(record):
    folder = REPO / record.staged_dir
    digest = sha256_file(str(folder / WEIGHTS_FILE))
    assert digest == record.sha256
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config['architecture'] == record.arch and config['num_classes'] == record.num_classes
    assert config['weights_sha256'] == {WEIGHTS_FILE: record.sha256}
    card = (folder / 'README.md').read_text()
    assert read_card_sha256(card) == record.sha256
    assert f'value: {record.metrics["top1"]}' in card  # the model-index carries the record's top-1


@pytest.mark.parametrize('record', STAGED, ids=lambda w: w.name)
def test_tag_loads_the_staged_folder(record):
    """In a checkout, pretrained=True on a staged tag loads the staged file: the same weights as local-dir:."""
    by_tag = timm.create_model(record.name, pretrained=True)
    by_dir = timm.create_model(f'local-dir:{REPO / record.staged_dir}', pretrained=True)
    tag_state, dir_state = by_tag.state_dict(), by_dir.state_dict()
    assert tag_state.keys() == dir_state.keys()
    assert all(torch.equal(tag_state[k], dir_state[k]) for k in tag_state)
    assert by_tag.head.calib.conv.weight.abs().sum() > 0  # trained, not the zero-initialised map conv


def test_staged_tag_outside_a_checkout_names_the_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(camc_pretrained, '_SOURCE_ROOT', tmp_path)  # an installed package: no hub/staged/ beside it
    record = STAGED[0]
    with pytest.raises(camc_pretrained.WeightsNotPublishedError) as e:
        timm.create_model(record.name, pretrained=True)
    message = str(e.value)
    assert 'staged' in message and record.staged_dir in message and 'local-dir:' in message and '\n' not in message


def test_staged_tag_with_changed_weights_is_refused(monkeypatch, tmp_path):
    record = STAGED[0]
    copy = tmp_path / record.staged_dir
    shutil.copytree(REPO / record.staged_dir, copy)
    weights = copy / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b'\0')
    monkeypatch.setattr(camc_pretrained, '_SOURCE_ROOT', tmp_path)
    with pytest.raises(camc_pretrained.WeightsIntegrityError):
        timm.create_model(record.name, pretrained=True)


@pytest.fixture(scope='module')
def cifar10_test_split(tmp_path_factory) -> Path:
    return extract_cifar10_subset(tmp_path_factory.mktemp('cifar10_test'), 0, TEST_IMAGES_PER_CLASS)


def test_staged_cifar10_weights_reproduce_their_card(cifar10_test_split, tmp_path):
    """``local-dir:`` + validate.py (its defaults: fp32, loader workers) on the whole CIFAR-10 test split gives the
    card's top-1 within 0.1 points."""
    record = next(w for w in STAGED if w.name == 'resnet32_camc_lt.cifar10_lt_r100')
    assert sorted(p.name for p in (cifar10_test_split / 'test').iterdir()) == sorted(CIFAR10_CLASSES)
    results = tmp_path / 'results.json'
    proc = subprocess.run(
        [sys.executable, 'validate.py', '--model', f'local-dir:{record.staged_dir}', '--pretrained',
         '--data-dir', str(cifar10_test_split), '--split', 'test', '--results-file', str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    measured = json.loads(results.read_text())
    assert measured['num_samples'] == 10 * TEST_IMAGES_PER_CLASS
    assert abs(measured['top1'] - record.metrics['top1']) <= 0.1, (measured['top1'], record.metrics['top1'])
