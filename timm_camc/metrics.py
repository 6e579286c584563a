""" Evaluation metrics for long-tailed recognition

``LongTailMetrics`` accumulates a confusion matrix (and top-5 hits) over an evaluation set, optionally across
``torch.distributed`` ranks, and reports overall top-1 / top-5, per-class accuracy and the accuracy of class
groups: many / medium / few-shot classes by training count (the usual ImageNet-LT / Places-LT / iNaturalist
protocol, > 100, 20-100, < 20 images) and / or fixed groups of class indices (e.g. ``default_class_groups(10)``
for CIFAR-10-LT). A group's accuracy is the mean of its classes' accuracies (not pooled over its samples).

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist

__all__ = ['confusion_matrix', 'accuracy_by_group', 'default_class_groups', 'LongTailMetrics']


def _check_labels(labels: torch.Tensor, num_classes: int, what: str = 'targets') -> None:
    """Raises ValueError unless ``labels`` is a 1-D integer tensor with values in [0, num_classes)."""
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f'{what} must be a 1-D tensor of integer class indices, got {labels.dtype} '
                         f'of shape {tuple(labels.shape)}')
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        values = torch.unique(labels[bad]).tolist()
        shown = ', '.join(str(v) for v in values[:20]) + (', ...' if len(values) > 20 else '')
        raise ValueError(f'{what} must be in [0, {num_classes}), got {int(bad.sum())} out-of-range '
                         f'value(s): {shown}')


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion matrix of predicted against true class indices.

    Args:
        preds: Predicted class indices (B,).
        targets: True class indices (B,).
        num_classes: Number of classes K.

    Returns:
        int64 tensor (K, K) on the device of the inputs; entry ``[t, p]`` counts samples of true class ``t``
        predicted as ``p`` (rows = true class).
    """
    _check_labels(targets, num_classes, 'targets')
    _check_labels(preds, num_classes, 'preds')
    if preds.shape != targets.shape:
        raise ValueError(f'preds and targets must have the same shape, got {tuple(preds.shape)} and '
                         f'{tuple(targets.shape)}')
    index = targets.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy_by_group(
        per_class: Sequence[Optional[float]],
        groups: Mapping[str, Sequence[int]],
) -> Dict[str, Optional[float]]:
    """Mean per-class accuracy of each group of classes.

    Args:
        per_class: Accuracy of each class, None for a class without test samples.
        groups: Group name -> class indices.

    Returns:
        Group name -> mean accuracy of the group's classes that have test samples (None when there are none).
    """
    out = {}
    for name, indices in groups.items():
        accs = [per_class[i] for i in indices if per_class[i] is not None]
        out[name] = sum(accs) / len(accs) if accs else None
    return out


def default_class_groups(num_classes: int) -> Optional[Dict[str, List[int]]]:
    """Fixed head / medium / tail class groups for datasets that have a customary split.

    CIFAR-10-LT (K = 10, classes sorted by decreasing training count): head = classes 0-2, medium = 3-6,
    tail = 7-9. Other class counts have none (use many / medium / few-shot by training count instead).

    Args:
        num_classes: Number of classes K.

    Returns:
        Group name -> class indices, or None.
    """
    if num_classes == 10:
        return {'head': [0, 1, 2], 'medium': [3, 4, 5, 6], 'tail': [7, 8, 9]}
    return None


class LongTailMetrics:
    """Accumulated top-1 / top-5, per-class and class-group accuracy for long-tailed classification.

    Usage: ``reset()``, ``update(logits, targets)`` per batch, ``sync()`` on every rank after the last batch
    (a no-op without ``torch.distributed``), then ``compute()``. ``sync()`` keeps the local counts, so calling
    it twice does not double-count; an ``update()`` after it drops the synced result until the next ``sync()``.

    ``compute()`` returns a dict with:

    * ``top1``, ``top5``: accuracy in percent (``top5`` is None when K < 5; both None before any sample),
    * ``per_class``: list of K accuracies in percent, None for classes without test samples,
    * ``num_samples``: number of samples seen,
    * with ``train_counts``: ``many`` (> ``many_thresh`` training images), ``medium`` (``few_thresh`` to
      ``many_thresh`` inclusive) and ``few`` (< ``few_thresh``) accuracies (None for an empty group),
      ``group_sizes`` (classes per group), ``many_thresh`` and ``few_thresh``,
    * with ``class_groups``: ``class_groups`` (name -> accuracy) and ``class_group_sizes`` (name -> classes).

    Group accuracies are means of per-class accuracies over the group's classes that have test samples.
    """

    def __init__(
            self,
            num_classes: int,
            train_counts: Optional[Union[Sequence[int], torch.Tensor]] = None,
            many_thresh: int = 100,
            few_thresh: int = 20,
            class_groups: Optional[Mapping[str, Sequence[int]]] = None,
    ):
        """
        Args:
            num_classes: Number of classes K.
            train_counts: Training images per class (length K), for the many / medium / few-shot groups.
            many_thresh: Classes with more training images than this are many-shot.
            few_thresh: Classes with fewer training images than this are few-shot.
            class_groups: Group name -> class indices, reported in addition (e.g. ``default_class_groups(10)``).
        """
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        if few_thresh > many_thresh:
            raise ValueError(f'few_thresh ({few_thresh}) must not exceed many_thresh ({many_thresh})')
        self.num_classes = num_classes
        self.many_thresh = many_thresh
        self.few_thresh = few_thresh

        self.shot_groups: Optional[Dict[str, List[int]]] = None
        if train_counts is not None:
            counts = torch.as_tensor(train_counts).detach().cpu()
            if counts.dim() != 1 or counts.numel() != num_classes:
                raise ValueError(f'train_counts must have one entry per class ({num_classes}), '
                                 f'got shape {tuple(counts.shape)}')
            if (counts < 0).any():
                raise ValueError('train_counts must be non-negative')
            self.shot_groups = {
                'many': (counts > many_thresh).nonzero().flatten().tolist(),
                'medium': ((counts >= few_thresh) & (counts <= many_thresh)).nonzero().flatten().tolist(),
                'few': (counts < few_thresh).nonzero().flatten().tolist(),
            }

        self.class_groups: Optional[Dict[str, List[int]]] = None
        if class_groups is not None:
            self.class_groups = {}
            for name, indices in class_groups.items():
                indices = [int(i) for i in indices]
                bad = sorted({i for i in indices if not 0 <= i < num_classes})
                if bad:
                    raise ValueError(f'class_groups[{name!r}] has class indices outside [0, {num_classes}): {bad}')
                self.class_groups[name] = indices

        self.reset()

    def reset(self) -> None:
        """Clears the accumulated counts."""
        self.confmat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self.top5_hits = torch.zeros((), dtype=torch.long)
        self._synced: Optional[torch.Tensor] = None  # flat [confmat, top5_hits] summed over ranks

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds a batch.

        Args:
            logits: Class scores (B, K).
            targets: True class indices (B,), int64 in [0, K).
        """
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f'logits must have shape (B, {self.num_classes}), got {tuple(logits.shape)}')
        _check_labels(targets, self.num_classes, 'targets')
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f'{logits.shape[0]} logits rows but {targets.shape[0]} targets')
        targets = targets.to(logits.device)
        if self.confmat.device != logits.device:
            self.confmat = self.confmat.to(logits.device)
            self.top5_hits = self.top5_hits.to(logits.device)
        self.confmat += confusion_matrix(logits.argmax(dim=1), targets, self.num_classes)
        if self.num_classes >= 5:
            top5 = logits.topk(5, dim=1).indices
            self.top5_hits += (top5 == targets.unsqueeze(1)).any(dim=1).sum()
        self._synced = None

    def sync(self, group: Optional[dist.ProcessGroup] = None) -> None:
        """Sums the counts over the ranks of ``group`` (all ranks must call it); no-op without distributed.

        Args:
            group: Process group, the default group when None.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        state = torch.cat([self.confmat.flatten(), self.top5_hits.reshape(1)])
        if dist.get_backend(group) == dist.Backend.NCCL and state.device.type != 'cuda':
            state = state.to(torch.device('cuda', torch.cuda.current_device()))
        dist.all_reduce(state, op=dist.ReduceOp.SUM, group=group)
        self._synced = state

    def _counts(self):
        if self._synced is None:
            return self.confmat.cpu(), int(self.top5_hits)
        state = self._synced.cpu()
        return state[:-1].reshape(self.num_classes, self.num_classes), int(state[-1])

    def compute(self) -> Dict[str, object]:
        """The metrics (after ``sync()`` when distributed); see the class docstring for the keys."""
        confmat, top5_hits = self._counts()
        support = confmat.sum(dim=1)
        correct = confmat.diagonal()
        num_samples = int(support.sum())
        per_class = [100. * c / n if n else None for c, n in zip(correct.tolist(), support.tolist())]
        out = {
            'top1': 100. * int(correct.sum()) / num_samples if num_samples else None,
            'top5': 100. * top5_hits / num_samples if num_samples and self.num_classes >= 5 else None,
            'per_class': per_class,
            'num_samples': num_samples,
        }
        if self.shot_groups is not None:
            out.update(accuracy_by_group(per_class, self.shot_groups))
            out['group_sizes'] = {name: len(idx) for name, idx in self.shot_groups.items()}
            out['many_thresh'] = self.many_thresh
            out['few_thresh'] = self.few_thresh
        if self.class_groups is not None:
            out['class_groups'] = accuracy_by_group(per_class, self.class_groups)
            out['class_group_sizes'] = {name: len(idx) for name, idx in self.class_groups.items()}
        return out
