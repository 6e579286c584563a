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
        '--lt-imbalance', '10', '--batch-size', '32', '--warmup-epochs', '1', '--log-interval', '4',
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
    assert f'Validate with: {sys.executable} validate.py' in first.stderr  # runnable as printed: the venv's python
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
    assert r['shot_group_sizes'] == {'many_shot': 0, 'medium_shot': 7, 'few_shot': 3}  # counts from the checkpoint
    assert r['many_shot'] is None and r['medium_shot'] is not None and r['few_shot'] is not None
    assert set(r['class_groups']) == {'head', 'medium', 'tail'}
    assert r['class_names'][0] == 'airplane'
    printed = json.loads(val.stdout.strip().splitlines()[-1])
    assert printed['top1'] == round(r['top1'], 2)

    # the same weights as a bare safetensors file: counts from --train-counts (the run's lt_subset.json)
    from safetensors.torch import save_file
    weights = tmp_path / 'weights.safetensors'
    save_file({k: v.contiguous() for k, v in _state(run / 'last.pth.tar').items()}, str(weights))  # channels_last run
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


@pytest.mark.parametrize('loader', [(), ('--in-memory', 'off')], ids=['in-memory', 'pil-2-workers'])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(cifar10_small, tmp_path, loader):
    """With the default loader (in memory for the CIFAR recipe) and with the PIL loader at the default -j 2."""
    extra = ('--epochs', '3', '--model-ema', '--sampler', 'sqrt', '--log-interval', '2', *loader)
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
                            '--camc', 'none', '--no-norm-classifier'))
    assert res.returncode == 2, res.stderr[-3000:]
    assert 'Non-finite loss in epoch 1' in res.stderr
    checkpoint = torch.load(tmp_path / 'nan' / 'last.pth.tar', weights_only=False)
    assert checkpoint['epoch'] == 0
    assert all(torch.isfinite(v).all() for v in checkpoint['state_dict'].values() if v.is_floating_point())


def test_torchrun_two_gloo_processes(cifar10_small, tmp_path):
    torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent)) or shutil.which('torchrun')
    assert torchrun, 'torchrun is installed with torch'
    # 199 validation images: an odd count, which timm's distributed eval sampler would pad with a repeat
    classes = sorted(p.name for p in (cifar10_small / 'test').iterdir())
    listed = [f'test/{c}/{f.name} {i}' for i, c in enumerate(classes)
              for f in sorted((cifar10_small / 'test' / c).iterdir())]
    val_list = tmp_path / 'val199.txt'
    val_list.write_text('\n'.join(listed[:199]) + '\n')
    res = _run(torchrun, '--standalone', '--nproc_per_node', '2',
               *_train_args(cifar10_small, tmp_path, 'ddp', '--epochs', '1', '--sampler', 'class_aware',
                             '--mixup', '0.2', '--loss', 'logit_adjusted', '--val-list', str(val_list))[1:])
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'process 1 of 2' in res.stderr
    results = json.loads((tmp_path / 'ddp' / 'results.json').read_text())
    assert results['eval']['num_samples'] == 199  # every listed test image once over both ranks, none repeated
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


def _rows(run_dir):
    with open(run_dir / 'summary.csv', newline='') as f:
        return list(csv.DictReader(f))


def test_eval_interval_leaves_no_stale_metrics(cifar10_small, tmp_path):
    res = _run(*_train_args(cifar10_small, tmp_path, 'ei', '--epochs', '3', '--eval-interval', '2',
                            '--warmup-lr', '0.02', '--lr', '0.1'))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(tmp_path / 'ei')
    assert [r['epoch'] for r in rows] == ['0', '1', '2']
    assert rows[0]['eval_top1'] == '' and rows[1]['eval_top1'] and rows[2]['eval_top1']  # read right by DictReader
    assert float(rows[0]['lr']) == pytest.approx(0.02) and float(rows[1]['lr']) == pytest.approx(0.1)  # this epoch's
    saved = {e: torch.load(tmp_path / 'ei' / f'checkpoint-{e}.pth.tar', weights_only=False) for e in (0, 1, 2)}
    assert 'metric' not in saved[0] and saved[1]['metric'] == float(rows[1]['eval_top1'])
    assert saved[2]['metric'] == float(rows[2]['eval_top1'])


def test_summary_rows_are_replaced_not_repeated(tmp_path):
    from timm_camc.engine import write_summary_row
    path = str(tmp_path / 'summary.csv')
    write_summary_row(path, dict(epoch=0, lr=0.1, train_loss=2.))
    write_summary_row(path, dict(epoch=1, lr=0.1, train_loss=1.5, eval_top1=30.))
    write_summary_row(path, dict(epoch=2, lr=0.1, train_loss=1.2))  # killed before its checkpoint: redone below
    write_summary_row(path, dict(epoch=2, lr=0.1, train_loss=1.1, eval_top1=40.))
    rows = _rows(tmp_path)
    assert [(r['epoch'], r['train_loss'], r['eval_top1']) for r in rows] == [
        ('0', '2.0', ''), ('1', '1.5', '30.0'), ('2', '1.1', '40.0')]
    assert not (tmp_path / 'summary.csv.tmp').exists()


def test_checkpoint_files_never_missing(tmp_path, monkeypatch):
    """timm's saver unlinks model_best (and last) before re-linking them; ours replaces them atomically."""
    from timm_camc.engine import AtomicCheckpointSaver
    model = torch.nn.Linear(2, 2)
    saver = AtomicCheckpointSaver(model, torch.optim.SGD(model.parameters(), lr=0.1), checkpoint_dir=str(tmp_path),
                                  recovery_dir=str(tmp_path), max_history=2)
    saver.save_checkpoint(0, metric=1.)
    watched = [tmp_path / 'model_best.pth.tar', tmp_path / 'last.pth.tar']
    real_unlink, real_replace, real_link = os.unlink, os.replace, os.link
    gaps = []

    def check(name, fn):
        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            gaps.extend(f'{p.name} missing after {name}' for p in watched if not p.exists())
            return result
        return wrapped

    monkeypatch.setattr(os, 'unlink', check('unlink', real_unlink))
    monkeypatch.setattr(os, 'replace', check('replace', real_replace))
    monkeypatch.setattr(os, 'link', check('link', real_link))
    saver.save_checkpoint(1, metric=2.)  # a new best: both files are rewritten
    assert gaps == []
    assert torch.load(tmp_path / 'model_best.pth.tar', weights_only=False)['epoch'] == 1


def test_non_finite_state_is_never_saved():
    from timm_camc.engine import NonFiniteLossError, check_finite_state
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    check_finite_state(0, model, eval_metrics=dict(loss=1.))
    with pytest.raises(NonFiniteLossError, match='evaluation loss'):
        check_finite_state(0, model, eval_metrics=dict(loss=float('nan')))
    model[1].running_var[2] = float('inf')  # a finite training loss can leave this behind
    with pytest.raises(NonFiniteLossError, match=r"model tensors \['1.running_var'\]"):
        check_finite_state(3, model)


def _nine_classes(src, dest):
    for split in ('train', 'test'):
        for folder in sorted((src / split).iterdir())[:9]:
            shutil.copytree(folder, dest / split / folder.name)
    return dest


def test_bad_inputs_fail_in_one_line_before_any_output(cifar10_small, tmp_path):
    """Each: exit 2, one error line, no traceback, and no output folder."""
    run = tmp_path / 'ok'
    good = _run(*_train_args(cifar10_small, tmp_path, 'ok', '--epochs', '1'))
    assert good.returncode == 0, good.stderr[-2000:]
    truncated = tmp_path / 'truncated.pth.tar'
    truncated.write_bytes((run / 'last.pth.tar').read_bytes()[:5000])
    bad_yaml = tmp_path / 'bad.yaml'
    bad_yaml.write_text('model: [resnet32_camc_lt\nlr: 0.1\n')
    val_list = tmp_path / 'val.txt'
    val_list.write_text('test/cat/0000.jpg 3\ntest/dog/0000.jpg 12\n')
    for name in ('cat', 'dog'):
        first = sorted((cifar10_small / 'test' / name).iterdir())[0]
        (tmp_path / 'test' / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(first, tmp_path / 'test' / name / '0000.jpg')
    nine = _nine_classes(cifar10_small, tmp_path / 'nine')
    cases = {
        'unknown model': (['--model', 'resnet33_camc_lt'], "Unknown model 'resnet33_camc_lt'"),
        'invalid yaml': (['-c', str(bad_yaml)], 'invalid YAML in'),
        'truncated resume': (['--resume', str(truncated)], 'cannot read checkpoint'),
        'resume into 9 classes': (['--data-dir', str(nine), '--resume', str(run / 'last.pth.tar')],
                                  'does not fit resnet32_camc_lt with 9 classes:'),
        'val label out of range': (['--data-dir', str(tmp_path), '--train-split', str(cifar10_small / 'train'),
                                    '--val-list', str(val_list)],
                                   'Validation labels [12] are outside the 10 training classes'),
        'in-memory on, rrc': (['--in-memory', 'on', '--train-crop-mode', 'rrc'], '--in-memory on is not possible'),
        'ldam with a learned scale': (['--loss', 'ldam', '--learn-scale'], 'drop one of them'),
        'no validation folder': (['--val-split', 'validation'], "--val-split test"),
    }
    for i, (case, (extra, message)) in enumerate(cases.items()):
        res = _run(*_train_args(cifar10_small, tmp_path / 'out', f'e{i}', '--epochs', '1'), *extra)
        assert res.returncode == 2, (case, res.stderr[-2000:])
        errors = [line for line in res.stderr.splitlines() if 'Error' in line or 'error:' in line]
        assert len(errors) == 1 and message in errors[0], (case, res.stderr[-2000:])
        assert 'Traceback' not in res.stderr, case
        assert not (tmp_path / 'out' / f'e{i}').exists(), case


def test_corrupt_image_with_workers_is_one_line(cifar10_small, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(cifar10_small, data)
    bad = sorted((data / 'train' / 'airplane').iterdir())[3]
    bad.write_bytes(b'not a jpeg')
    for loader in ([], ['--in-memory', 'off', '-j', '2']):
        res = _run(*_train_args(data, tmp_path, 'corrupt', '--epochs', '1', *loader))
        assert res.returncode == 2, res.stderr[-2000:]
        errors = [line for line in res.stderr.splitlines() if line.strip()]
        assert 'Traceback' not in res.stderr and 'Cannot read image' in errors[-1] and bad.name in errors[-1], \
            res.stderr[-3000:]


def test_empty_class_folder_is_an_error_unless_allowed(cifar10_small, tmp_path):
    data = _nine_classes(cifar10_small, tmp_path / 'data')
    (data / 'train' / 'zebra').mkdir()
    res = _run(*_train_args(data, tmp_path, 'empty', '--epochs', '1', '--lt-imbalance', '0'))
    assert res.returncode == 2 and "hold no image: ['zebra']" in res.stderr, res.stderr[-2000:]
    res = _run(*_train_args(data, tmp_path, 'empty', '--epochs', '1', '--lt-imbalance', '0', '--allow-empty-classes'))
    assert res.returncode == 0, res.stderr[-2000:]
    assert torch.load(tmp_path / 'empty' / 'last.pth.tar', weights_only=False)['args'].num_classes == 9


def test_run_script_takes_relative_paths_from_the_caller(cifar10_small, tmp_path):
    (tmp_path / 'here').mkdir()
    os.symlink(cifar10_small, tmp_path / 'here' / 'mydata')
    res = _run('bash', str(REPO / 'scripts' / 'run.sh'), '--data-dir', 'mydata', '--val-split', 'nope',
               cwd=tmp_path / 'here')
    # the training folder was found from the caller's directory; the wrong split is reported with its full path
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"Validation folder not found: '{tmp_path / 'here' / 'mydata' / 'nope'}'" in res.stderr, res.stderr[-2000:]


def test_validate_refuses_an_empty_class_folder_unless_allowed(cifar10_small, tmp_path):
    data = _nine_classes(cifar10_small, tmp_path / 'data')
    res = _run(*_train_args(data, tmp_path, 'nine', '--epochs', '1', '--lt-imbalance', '0'))
    assert res.returncode == 0, res.stderr[-2000:]
    (data / 'test' / 'zebra').mkdir()
    args = [sys.executable, 'validate.py', '--model', 'resnet32_camc_lt', '--checkpoint',
            str(tmp_path / 'nine' / 'last.pth.tar'), '--data-dir', str(data), '--split', 'test']
    res = _run(*args)
    assert res.returncode == 2 and "hold no image: ['zebra']" in res.stderr, res.stderr[-2000:]
    res = _run(*args, '--allow-empty-classes', '--results-file', str(tmp_path / 'r.json'))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / 'r.json').read_text())['num_samples'] == 180


def test_registries_name_real_train_options():
    """The loss and sampler registries map their kwargs from train.py options: each one must exist there, and a
    parsed command line reaches the loss and the sampler under the registry's kwarg names."""
    import importlib.util
    from timm_camc.data import SAMPLERS, sampler_options
    from timm_camc.loss import LOSSES, classifier_loss_kwargs, loss_options

    spec = importlib.util.spec_from_file_location('camc_train_options', REPO / 'train.py')
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    dests = {a.dest for a in train.parser._actions}
    for registry in (LOSSES, SAMPLERS):
        for name, entry in registry.items():
            assert set(entry.options.values()) <= dests, (name, set(entry.options.values()) - dests)
    assert {a.choices for a in train.parser._actions if a.dest == 'loss'} == {tuple(LOSSES)}

    args = vars(train.parser.parse_args(['--loss', 'ldam', '--ldam-margin', '0.3', '--drw-epoch', '7',
                                         '--sampler', 'power', '--sampler-power', '0.25', '--epochs', '9']))
    assert loss_options('ldam', args) == dict(max_margin=0.3, drw_epoch=7, beta=0.9999)  # --ldam-scale unset
    assert dict(classifier_loss_kwargs('ldam', 16.), **loss_options('ldam', args))['scale'] == 30.
    assert sampler_options('power', args) == dict(power=0.25)
    assert sampler_options('progressive', args) == dict(total_epochs=9)


def test_plain_timm_model_trains_and_tau_norm_validates(cifar10_small, tmp_path):
    """A plain timm model goes through train.py with the recipe's (CAMC) options ignored, and validate.py's post-hoc
    tau-normalisation works on its linear classifier (it is refused on a cosine one, see above)."""
    too_big = _run(*_train_args(cifar10_small, tmp_path, 'plain', '--model', 'resnet10t', '--epochs', '1'))
    assert too_big.returncode == 2 and 'pass --img-size 32' in too_big.stderr.strip().splitlines()[-1], too_big.stderr
    assert not (tmp_path / 'plain').exists()  # the error comes before any output
    res = _run(*_train_args(cifar10_small, tmp_path, 'plain', '--model', 'resnet10t', '--img-size', '32',
                            '--epochs', '1', '--camc', 'global', '--cosine-scale', '8'))  # head options: ignored
    assert res.returncode == 0, res.stderr[-3000:]
    state = _state(tmp_path / 'plain' / 'last.pth.tar')
    assert 'fc.weight' in state and not any('calib' in k for k in state)  # timm's own linear head
    checkpoint = str(tmp_path / 'plain' / 'last.pth.tar')
    results = {}
    for tau in ('0', '1'):
        out = tmp_path / f'tau{tau}.json'
        val = _run(sys.executable, 'validate.py', '--model', 'resnet10t', '--checkpoint', checkpoint,
                   '--img-size', '32', '--data-dir', str(cifar10_small), '--split', 'test', '--results-file', str(out),
                   *(['--tau-norm', tau] if tau != '0' else []))
        assert val.returncode == 0, val.stderr[-3000:]
        results[tau] = json.loads(out.read_text())
    assert results['1']['tau_norm'] == 1.0 and results['0']['tau_norm'] is None
    assert results['1']['num_samples'] == results['0']['num_samples'] == 200
    assert results['1']['per_class'] != results['0']['per_class']  # the rescaled weight norms change predictions


def test_calibration_warmup_keeps_the_map_flat_until_it_ends(cifar10_small, tmp_path):
    """--calib-warmup 1: epoch 0 trains the plain classifier alone (the map conv keeps its zero start, the prototypes
    learn), epoch 1 trains the calibration too."""
    res = _run(*_train_args(cifar10_small, tmp_path, 'warm', '--epochs', '2', '--calib-warmup', '1',
                            '--checkpoint-hist', '2'))
    assert res.returncode == 0, res.stderr[-3000:]
    first, last = _state(tmp_path / 'warm' / 'checkpoint-0.pth.tar'), _state(tmp_path / 'warm' / 'last.pth.tar')
    assert (first['head.calib.conv.weight'] == 0).all() and first['head.calib.prototypes'].abs().sum() > 0
    assert last['head.calib.conv.weight'].abs().sum() > 0
    assert _state(tmp_path / 'warm' / 'last.pth.tar', 'args').calib_warmup == 1
