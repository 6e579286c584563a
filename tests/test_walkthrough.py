"""The README's fine-tuning walkthrough, run as written at tiny scale and offline.

The commands come from the README block between the walkthrough markers; each substitution below must match the
README text, so the README and this test cannot drift apart silently.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import timm
import torch
from safetensors.torch import save_file

from conftest import REPO
from timm_camc.data import long_tail_counts


def _readme_commands():
    text = (REPO / 'README.md').read_text()
    block = re.search(r'<!-- walkthrough:start -->\n```bash\n(.*?)```\n<!-- walkthrough:end -->', text, re.S)
    assert block, 'README.md lost its walkthrough block'
    lines = [line for line in block.group(1).replace('\\\n', ' ').splitlines() if line and not line.startswith('#')]
    return lines


def test_readme_walkthrough(cifar10_small, tmp_path):
    # your own long-tailed folder: real CIFAR-10 JPEGs, 100 down to 10 training images per class
    data = tmp_path / 'my-data'
    for c, n in zip(sorted(p.name for p in (cifar10_small / 'train').iterdir()), long_tail_counts(100, 10, 10)):
        (data / 'train' / c).mkdir(parents=True)
        for img in sorted((cifar10_small / 'train' / c).iterdir())[:n]:
            shutil.copy(img, data / 'train' / c / img.name)
    shutil.copytree(cifar10_small / 'test', data / 'validation')
    # "ImageNet weights of the plain timm backbone", offline: a timm resnet50 weights file
    weights = tmp_path / 'resnet50.safetensors'
    save_file(timm.create_model('resnet50').state_dict(), str(weights))

    substitutions = {
        'DATA': str(data),
        '--model resnet50_camc_lt.tv_in1k --pretrained': f'--model resnet50_camc_lt --pretrained-path {weights}',
        '--epochs 30': '--epochs 1 --img-size 64 -j 0',  # tiny scale
        '--cam-count 16': '--cam-count 4 --img-size 64 -j 0',
        'output/train': str(tmp_path / 'output' / 'train'),
        '--repo-id my-org/resnet50_camc_lt.my_data': f'--out {tmp_path / "published"}',  # offline: the folder only
    }
    commands = _readme_commands()
    assert [c.split()[1] for c in commands] == ['train.py', 'validate.py', 'hub/publish.py']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for command in commands:
        for old, new in substitutions.items():
            command = command.replace(old, new)
        args = shlex.split(command)
        res = subprocess.run([sys.executable, *args[1:]], cwd=REPO, capture_output=True, text=True, env=env,
                             timeout=600)
        assert res.returncode == 0, f'{command}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}'
    for old in substitutions:
        assert any(old in c for c in _readme_commands()) or old == 'DATA', f'README no longer says {old!r}'

    run = tmp_path / 'output' / 'train' / 'my-run'
    results = json.loads((run / 'results-ema.json').read_text())
    assert results['use_ema'] and results['shot_group_sizes'] == {'many_shot': 0, 'medium_shot': 7, 'few_shot': 3}
    assert (run / 'per_class.png').is_file() and len(list((run / 'cams').glob('*.png'))) == 4
    published = tmp_path / 'published'
    assert sorted(p.name for p in published.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((published / 'config.json').read_text())
    assert config['architecture'] == 'resnet50_camc_lt' and config['num_classes'] == 10
    # the published folder loads back with timm and matches the EMA weights that were validated
    model = timm.create_model(f'local-dir:{published}', pretrained=True).eval()
    ema = torch.load(run / 'last.pth.tar', map_location='cpu', weights_only=False)['state_dict_ema']
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ema[k], msg=k)
