"""What every benchmark record carries: the machine it ran on and the commit it measured."""
import os
import platform
import subprocess
import tarfile
from pathlib import Path

import torch

import timm
import timm_camc

__all__ = ['cpu_model', 'data_dir_or_tar', 'git', 'git_commit', 'machine_info']


def cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` is often empty on Linux)."""
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), '')
    except OSError:
        return platform.processor() or platform.machine()


def data_dir_or_tar(data_dir: str, tar: str, tmp: str, prefix: str = '') -> str:
    """``data_dir``, or the archive ``tar`` extracted into ``tmp`` (only its members under ``prefix``)."""
    if data_dir:
        return data_dir
    if not tar:
        raise SystemExit('give --data-dir or --tar')
    with tarfile.open(tar) as archive:
        archive.extractall(tmp, members=[m for m in archive if m.name.startswith(prefix)], filter='data')
    return tmp


def git(*args: str) -> str:
    """Output of a git command in this checkout, '' where git or the checkout is missing (e.g. a device copy)."""
    try:
        return subprocess.run(['git', *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def git_commit() -> str:
    """Short hash of the checked-out commit ('' outside a git checkout), with '+dirty' for local changes."""
    commit = git('rev-parse', '--short', 'HEAD')
    return commit + ('+dirty' if commit and git('status', '--porcelain', '--untracked-files=no') else '')


def machine_info(device: str = 'cpu') -> dict:
    """Device name (the GPU, or the CPU model), core and thread counts and library versions."""
    is_cuda = torch.device(device).type == 'cuda'
    return dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(torch.device(device)) if is_cuda else cpu_model(),
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        timm=timm.__version__,
        timm_camc=timm_camc.__version__,
        git_commit=git_commit(),
    )
