"""validate.py: one clear line for bad checkpoints, and each sample counted once when distributed."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

import timm
import timm_camc  # noqa: F401, registers the models
from timm.data.distributed_sampler import OrderedDistributedSampler
from timm_camc.data import RankShard
from timm_camc.checkpoint import summarize_load_error

from conftest import REPO


def _env(**extra):
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **extra)


def _validate(*args, env=None):
    return subprocess.Popen(
        [sys.executable, 'validate.py', *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env or _env())


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _errors(text):
    return [line for line in text.splitlines() if line.startswith('ERROR')]


def test_bad_checkpoints_give_one_line(tmp_path):
    """A truncated checkpoint and one of another architecture: exit 2 with one line, no traceback."""
    good = timm.create_model('resnet32_camc_lt', num_classes=10)
    path = tmp_path / 'last.pth.tar'
    torch.save({'state_dict': good.state_dict(), 'epoch': 0}, path)
    truncated = tmp_path / 'truncated.pth.tar'
    truncated.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    # wider and one block deeper: every conv / BN tensor has another shape, plus unexpected keys
    other = timm.create_model('resnet32_camc_lt', num_classes=10, channels=(32, 64, 128), layers=(5, 5, 6))
    wrong = tmp_path / 'wrong.pth.tar'
    torch.save({'state_dict': other.state_dict()}, wrong)

    runs = [_validate('--model', 'resnet32_camc_lt', '--checkpoint', str(p), '--data-dir', str(tmp_path),
                      '--device', 'cpu') for p in (truncated, wrong)]
    (code_t, _, err_t), (code_w, _, err_w) = [_finish(p) for p in runs]

    assert code_t == 2 and 'Traceback' not in err_t and len(err_t.splitlines()) <= 2, err_t
    assert len(_errors(err_t)) == 1 and 'Cannot read checkpoint' in err_t and 'truncated.pth.tar' in err_t
    assert code_w == 2 and 'Traceback' not in err_w and len(err_w.splitlines()) <= 2, err_w[-3000:]
    ours, theirs = good.state_dict(), other.state_dict()
    mismatched = sum(1 for k, v in theirs.items() if k in ours and v.shape != ours[k].shape)
    unexpected = sum(1 for k in theirs if k not in ours)
    assert mismatched > 100 and unexpected > 10
    [error] = _errors(err_w)
    assert f'{mismatched} tensor(s) of another shape: size mismatch for layer1.0.conv1.weight (checkpoint ' \
           f'torch.Size([32, 16, 3, 3]), model torch.Size([16, 16, 3, 3]))' in error
    assert f'; {unexpected} not in the model: ' in error
    assert len(error) < 1000  # the first few, not every tensor
    assert not list(tmp_path.glob('*results.json'))


def test_summarize_load_error_keeps_short_messages():
    assert summarize_load_error('no EMA weights') == 'no EMA weights'
    assert summarize_load_error('a\nb\nc') == 'a (... 2 more lines)'
    model = timm.create_model('resnet32_camc_lt', num_classes=3, camc='none')
    state = model.state_dict()
    del state['conv1.weight']
    state['extra.weight'] = torch.zeros(1)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(state)
    line = summarize_load_error(f'Checkpoint x does not fit y: {info.value}')
    assert line == ('Checkpoint x does not fit y: 1 missing from the checkpoint: conv1.weight; '
                    '1 not in the model: extra.weight')


@pytest.mark.parametrize('size, world', [(5, 2), (6, 2), (7, 3), (2, 3)])
def test_rank_shards_count_each_sample_once(size, world):
    data = list(range(size))
    shards = [RankShard(data, rank, world) for rank in range(world)]
    seen = sorted(x for shard in shards for x in (shard[i] for i in range(len(shard))))
    assert seen == data
    # timm's distributed eval sampler repeats samples to even out the ranks whenever world does not divide size
    padded = sorted(i for rank in range(world) for i in OrderedDistributedSampler(data, world, rank))
    assert (padded == data) == (size % world == 0)


def test_rank_shard_forwards_the_transform():
    class Data(torch.utils.data.Dataset):
        transform = None

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return self.transform(i)

    data = Data()
    shard = RankShard(data, 1, 2)
    shard.transform = lambda i: i * 10
    assert data.transform is shard.transform and [shard[i] for i in range(len(shard))] == [10]
    with pytest.raises(ValueError, match='rank 2'):
        RankShard(data, 2, 2)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason='needs the gloo backend')
def test_distributed_validate_counts_each_sample_once(tmp_path):
    """5 images on 2 gloo ranks: timm's sampler would evaluate 6 (one repeated); each is counted once."""
    rng = np.random.default_rng(0)
    per_class = {'a': 2, 'b': 2, 'c': 1}
    for name, n in per_class.items():
        (tmp_path / 'test' / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / 'test' / name / f'{i}.png')
    port = str(_free_port())
    results = tmp_path / 'results.json'
    procs = [
        _validate('--model', 'resnet32_camc_lt', '--num-classes', '3', '--data-dir', str(tmp_path), '--split', 'test',
                  '--device', 'cpu', '-j', '0', '-b', '2', '--results-file', str(results),
                  env=_env(WORLD_SIZE='2', RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=port))
        for rank in range(2)]
    for proc in procs:
        code, _, err = _finish(proc)
        assert code == 0, err[-3000:]
    r = json.loads(results.read_text())
    assert r['num_samples'] == 5
    assert [n for n in r['per_class'] if n is not None]  # every class was seen
