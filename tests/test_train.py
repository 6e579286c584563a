"""train.py and validate.py end to end on a few hundred real CIFAR-10 JPEG images (CPU, a few epochs)."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO


def _run(*args, cwd=REPO, timeout=300, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def _train_args(data, out, experiment, *extra):
    return [
        sys.executable, 'train.py', '-c', 'configs/cifar10_lt_r100.yaml', '--data-dir', str(data),
        '--lt-imbalance', '10', '--batch-size', '32', '--warmup-epochs', '1', '--log-interval', '4', '-j', '0',
        '--output', str(out), '--experiment', experiment, '--device', 'cpu', *extra,
    ]


def _state(path, key='state_dict'):
    return torch.load(path, map_location='cpu', weights_only=False)[key]


def _summary_epochs(run_dir):
    with open(run_dir / 'summary.csv') as f:
        return [int(row['epoch']) for row in csv.DictReader(f)]


def test_train_checkpoint_resume_validate(cifar10_small, tmp_path):
    run = tmp_path / 'cb'
    first = _run(*_train_args(cifar10_small, tmp_path, 'cb', '--epochs', '2', '--sampler', 'class_balanced'))
    assert first.returncode == 0, first.stderr[-3000:]
    assert 'Validate with: python validate.py' in first.stderr
    for name in ('args.yaml', 'summary.csv', 'last.pth.tar', 'model_best.pth.tar', 'lt_train.txt', 'results.json'):
        assert (run / name).is_file(), name
    assert _summary_epochs(run) == [0, 1]
    checkpoint = torch.load(run / 'last.pth.tar', map_location='cpu', weights_only=False)
    assert checkpoint['epoch'] == 1
    assert checkpoint['args'].class_counts == [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    assert checkpoint['state_dict']['head.calib.prototypes'].abs().sum() > 0

    resumed = _run(*_train_args(cifar10_small, tmp_path, 'cb', '--epochs', '3', '--sampler', 'class_balanced',
                                '--resume', str(run / 'last.pth.tar')))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Restoring optimizer state' in resumed.stderr
    assert _summary_epochs(run) == [0, 1, 2]

    results = tmp_path / 'val.json'
    val = _run(sys.executable, 'validate.py', '--model', 'resnet32_camc_lt', '--checkpoint', str(run / 'last.pth.tar'),
               '--data-dir', str(cifar10_small), '--split', 'test', '--results-file', str(results), '-j', '0',
               '--plot', str(tmp_path / 'per_class.png'), '--cam-dir', str(tmp_path / 'cams'), '--cam-count', '4')
    assert val.returncode == 0, val.stderr[-3000:]
    assert (tmp_path / 'per_class.png').stat().st_size > 10_000
    assert len(list((tmp_path / 'cams').glob('cam_*.png'))) == 4
    r = json.loads(results.read_text())
    assert r['num_samples'] == 200 and len(r['per_class']) == 10
    assert 0 <= r['top1'] <= 100 and r['top5'] >= r['top1']
    assert r['group_sizes'] == {'many': 0, 'medium': 7, 'few': 3}  # training counts from the checkpoint
    assert r['many'] is None and r['medium'] is not None and r['few'] is not None
    assert set(r['class_groups']) == {'head', 'medium', 'tail'}
    assert r['class_names'][0] == 'airplane'
    printed = json.loads(val.stdout.strip().splitlines()[-1])
    assert printed['top1'] == round(r['top1'], 2)

    # the same weights as a bare safetensors file: counts from --train-counts (the run's lt_subset.json)
    from safetensors.torch import save_file
    weights = tmp_path / 'weights.safetensors'
    save_file(_state(run / 'last.pth.tar'), str(weights))
    val2 = _run(sys.executable, 'validate.py', '--model', 'resnet32_camc_lt', '--checkpoint', str(weights),
                '--data-dir', str(cifar10_small), '--split', 'test', '--train-counts', str(run / 'lt_subset.json'),
                '--num-classes', '10', '--results-file', str(tmp_path / 'val2.json'), '-j', '0')
    assert val2.returncode == 0, val2.stderr[-3000:]
    assert json.loads((tmp_path / 'val2.json').read_text())['top1'] == r['top1']

    wrong = _run(sys.executable, 'validate.py', '--model', 'resnet32_camc_lt', '--checkpoint', str(weights),
                 '--data-dir', str(cifar10_small), '--split', 'test', '--num-classes', '5', '-j', '0')
    assert wrong.returncode == 2
    assert 'size mismatch for head.fc.weight' in wrong.stderr and 'torch.Size([10, 64])' in wrong.stderr
    no_ema = _run(sys.executable, 'validate.py', '--model', 'resnet32_camc_lt', '--checkpoint',
                  str(run / 'last.pth.tar'), '--use-ema', '--data-dir', str(cifar10_small), '--split', 'test')
    assert no_ema.returncode == 2 and 'has no EMA weights' in no_ema.stderr
    tau = _run(sys.executable, 'validate.py', '--model', 'resnet32_camc_lt', '--checkpoint', str(run / 'last.pth.tar'),
               '--data-dir', str(cifar10_small), '--split', 'test', '--tau-norm', '1', '-j', '0')
    assert tau.returncode == 2 and 'cosine (normalised) classifier ignores' in tau.stderr

    # classifier re-training (cRT): a fresh head on the frozen backbone, BN statistics included
    crt = _run(*_train_args(cifar10_small, tmp_path, 'crt', '--epochs', '1', '--sampler', 'class_balanced', '--crt',
                            '--initial-checkpoint', str(run / 'last.pth.tar')))
    assert crt.returncode == 0, crt.stderr[-3000:]
    before, after = _state(run / 'last.pth.tar'), _state(tmp_path / 'crt' / 'last.pth.tar')
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith('head.') for k in changed), changed
    assert 'head.fc.weight' in changed


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(cifar10_small, tmp_path):
    extra = ('--epochs', '3', '--model-ema', '--sampler', 'sqrt', '--log-interval', '2')
    straight = _run(*_train_args(cifar10_small, tmp_path, 'straight', *extra))
    assert straight.returncode == 0, straight.stderr[-3000:]

    log = tmp_path / 'killed.log'
    with open(log, 'w') as f:
        proc = subprocess.Popen(_train_args(cifar10_small, tmp_path, 'killed', *extra), cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS='1'))
    deadline = time.time() + 240
    while 'Train: 1 [   4/' not in log.read_text():  # the middle of the second epoch
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = tmp_path / 'killed'
    assert torch.load(killed / 'last.pth.tar', weights_only=False)['epoch'] == 0
    assert not (killed / 'results.json').exists()

    resumed = _run(*_train_args(cifar10_small, tmp_path, 'killed', *extra, '--resume', str(killed / 'last.pth.tar')))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for key in ('state_dict', 'state_dict_ema'):
        a, b = _state(tmp_path / 'straight' / 'last.pth.tar', key), _state(killed / 'last.pth.tar', key)
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], key
    assert _summary_epochs(killed) == [0, 1, 2]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cifar10_small, tmp_path):
    # epoch 0 warms up at a sane LR, epoch 1 runs at 1e30 and diverges
    res = _run(*_train_args(cifar10_small, tmp_path, 'nan', '--epochs', '3', '--warmup-lr', '0.01', '--lr', '1e30',
                            '--camc', 'none', '--linear-classifier'))
    assert res.returncode == 2, res.stderr[-3000:]
    assert 'Non-finite loss in epoch 1' in res.stderr
    checkpoint = torch.load(tmp_path / 'nan' / 'last.pth.tar', weights_only=False)
    assert checkpoint['epoch'] == 0
    assert all(torch.isfinite(v).all() for v in checkpoint['state_dict'].values() if v.is_floating_point())


def test_torchrun_two_gloo_processes(cifar10_small, tmp_path):
    torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent)) or shutil.which('torchrun')
    assert torchrun, 'torchrun is installed with torch'
    res = _run(torchrun, '--standalone', '--nproc_per_node', '2',
               *_train_args(cifar10_small, tmp_path, 'ddp', '--epochs', '1', '--sampler', 'class_aware',
                             '--mixup', '0.2', '--loss', 'logit_adjusted')[1:])
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'process 1 of 2' in res.stderr
    results = json.loads((tmp_path / 'ddp' / 'results.json').read_text())
    assert results['eval']['num_samples'] >= 200  # ranks' shards gathered (timm pads to equal shards)
    protos = _state(tmp_path / 'ddp' / 'last.pth.tar')['head.calib.prototypes']
    assert (protos.norm(dim=1) > 0).all()  # every class seen through the all-gathered labels


@pytest.mark.parametrize('extra, message', [
    (('--no-such-option',), 'unrecognized arguments: --no-such-option'),
    (('--sampler', 'magic'), "argument --sampler: invalid choice: 'magic'"),
    (('--lt-imbalance', '100000'), 'leaves classes'),
])
def test_bad_options_fail_clearly(cifar10_small, tmp_path, extra, message):
    res = _run(*_train_args(cifar10_small, tmp_path, 'bad', '--epochs', '1', *extra))
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / 'bad' / 'last.pth.tar').exists()


def test_bad_config_and_data_dir(tmp_path):
    config = tmp_path / 'bad.yaml'
    config.write_text('model: resnet32_camc_lt\nlearning_rate: 0.1\n')
    res = _run(sys.executable, 'train.py', '-c', str(config))
    assert res.returncode == 2 and 'unknown option(s) in' in res.stderr and 'learning_rate' in res.stderr
    res = _run(sys.executable, 'train.py', '--data-dir', str(tmp_path / 'missing'), '--output', str(tmp_path))
    assert res.returncode == 2 and 'Data folder not found' in res.stderr
    res = _run(sys.executable, 'train.py', '--dataset', 'torch/cifar10', '--data-dir', str(tmp_path),
               '--output', str(tmp_path))
    assert res.returncode == 2 and 'is not there (add --dataset-download)' in res.stderr, res.stderr[-2000:]
    assert 'Traceback' not in res.stderr


def test_progress_bar_on_a_terminal_and_log_lines_otherwise(cifar10_small, tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 120, 0, 0))  # a 120-column terminal
    env = {k: v for k, v in os.environ.items() if k != 'CI'}
    proc = subprocess.Popen(_train_args(cifar10_small, tmp_path, 'tty', '--epochs', '1'), cwd=REPO, stdin=secondary,
                            stdout=secondary, stderr=secondary, env=dict(env, OMP_NUM_THREADS='1'))
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=240) == 0
    os.close(primary)
    out = b''.join(chunks).decode(errors='replace')
    assert 'Train 0:' in out and '%|' in out and 'img/s' in out  # tqdm bar with its postfix
    assert 'Train: 0 [   4/' not in out  # no interval log lines under the bar
    assert 'Train: 0 [  11/' in out  # but the epoch's closing line
