""" Reading train.py checkpoints, and the evaluation model built from one

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import argparse
import os
import re
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn

import timm
from timm.models import load_checkpoint

from .models.registry import camc_model_kwargs

__all__ = ['checkpoint_args', 'create_eval_model', 'read_checkpoint', 'read_checkpoint_args', 'summarize_load_error']


def read_checkpoint(path: str) -> Any:
    """A train.py checkpoint as a dict (tensors memory-mapped; ``{}`` for a safetensors file).

    Raises:
        FileNotFoundError: No such file.
        RuntimeError: Not a readable PyTorch checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}')
    if path.endswith('.safetensors'):
        return {}
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as e:
        raise RuntimeError(f'Cannot read checkpoint {path}: {e}') from e


def read_checkpoint_args(path: str) -> Dict[str, Any]:
    """The training options stored in a train.py checkpoint (``{}`` for a bare state dict).

    Raises:
        FileNotFoundError: No such file.
        RuntimeError: Not a readable PyTorch checkpoint.
    """
    return checkpoint_args(read_checkpoint(path))


def checkpoint_args(checkpoint: Any) -> Dict[str, Any]:
    """The training options of a loaded train.py checkpoint, as a dict (``{}`` when it has none)."""
    args = checkpoint.get('args') if isinstance(checkpoint, dict) else None
    if args is None:
        return {}
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)


def create_eval_model(
        model_name: str,
        checkpoint: str = '',
        num_classes: Optional[int] = None,
        use_ema: bool = False,
        pretrained: bool = False,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """A model to evaluate: a registry name (with a train.py checkpoint or weights file), ``hf-hub:`` or ``local-dir:``.

    The CAMC head settings and the class count come from the checkpoint's training options, so the model is rebuilt
    as it was trained. Returns the model (on the CPU, in train mode as timm creates it) and those options.

    Raises:
        FileNotFoundError: No such checkpoint.
        ValueError: The checkpoint does not fit the model (the message names the tensors and shapes).
    """
    state = read_checkpoint(checkpoint) if checkpoint else {}
    ckpt_args = checkpoint_args(state)
    # a key holding None (a run without --model-ema saves state_dict_ema=None) is no EMA: timm would fall back to the
    # raw weights without a word
    if use_ema and all(state.get(k) is None for k in ('state_dict_ema', 'model_ema')):
        raise ValueError(f'--use-ema: checkpoint {checkpoint or "(none)"} has no EMA weights (train with --model-ema)')
    num_classes = num_classes or ckpt_args.get('num_classes')
    kwargs = camc_model_kwargs(model_name, ckpt_args)
    if num_classes:
        kwargs['num_classes'] = num_classes
    hub = model_name.startswith(('hf-hub:', 'local-dir:'))
    model = timm.create_model(model_name, pretrained=hub or pretrained, **kwargs)
    if checkpoint:
        try:
            load_checkpoint(model, checkpoint, use_ema=use_ema)
        except RuntimeError as e:
            raise ValueError(
                f'Checkpoint {checkpoint} does not fit {model_name} ({model.num_classes} classes): {e}') from e
    return model, ckpt_args


def summarize_load_error(error: Union[str, Exception], shown: int = 3) -> str:
    """One line for a ``load_state_dict`` error, or a message that contains one: the count of mismatched, missing and
    unexpected tensors and the first ``shown`` of each, instead of one line per tensor. Any text before the error is
    kept; another message keeps its first line."""
    message = str(error)
    head, _, body = message.partition('Error(s) in loading state_dict')
    if not body:
        lines = message.strip().splitlines()
        return lines[0] + (f' (... {len(lines) - 1} more lines)' if len(lines) > 1 else '')
    parts = []
    sizes = re.findall(r'size mismatch for ([^:\s]+): copying a param with shape (torch\.Size\(\[[^\]]*\]\)) from '
                       r'checkpoint, the shape in current model is (torch\.Size\(\[[^\]]*\]\))', body)
    if sizes:
        first = ', '.join(f'{k} (checkpoint {a}, model {b})' for k, a, b in sizes[:shown])
        parts.append(f'{len(sizes)} tensor(s) of another shape: size mismatch for {first}'
                     + (', ...' if len(sizes) > shown else ''))
    for label, what in (('Missing key(s)', 'missing from the checkpoint'), ('Unexpected key(s)', 'not in the model')):
        match = re.search(re.escape(label) + r' in state_dict: (.*?)\.\s*(?:\n|$)', body)
        keys = re.findall(r'"([^"]+)"', match.group(1)) if match else []
        if keys:
            parts.append(f'{len(keys)} {what}: {", ".join(keys[:shown])}' + (', ...' if len(keys) > shown else ''))
    summary = '; '.join(parts or [body.strip().splitlines()[0]])
    head = head.strip().rstrip(':')
    return f'{head}: {summary}' if head else summary
