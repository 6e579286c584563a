"""What every benchmark record carries: the machine it ran on and the commit it measured."""
import os
import platform
import subprocess
from pathlib import Path

import torch

import timm
import timm_camc

__all__ = ['git_commit', 'machine_info']


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), '')
    except OSError:
        return platform.processor()


def git_commit() -> str:
    """Short hash of the checked-out commit ('' outside a git checkout), with '+dirty' for local changes."""
    repo = Path(__file__).resolve().parent
    run = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True, cwd=repo).stdout.strip()  # noqa: E731
    commit = run('git', 'rev-parse', '--short', 'HEAD')
    return commit + ('+dirty' if commit and run('git', 'status', '--porcelain', '--untracked-files=no') else '')


def machine_info(device: str = 'cpu') -> dict:
    """Device name (the GPU, or the CPU model), core and thread counts and library versions."""
    is_cuda = torch.device(device).type == 'cuda'
    return dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(torch.device(device)) if is_cuda else _cpu_model(),
        cpu_model=_cpu_model(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        timm=timm.__version__,
        timm_camc=timm_camc.__version__,
        git_commit=git_commit(),
    )
