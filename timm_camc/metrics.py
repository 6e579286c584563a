""" Evaluation metrics for long-tailed recognition

``LongTailMetrics`` accumulates per-class correct and support counts (and top-5 hits) over an evaluation set,
optionally across ``torch.distributed`` ranks, and reports overall top-1 / top-5, per-class accuracy and two
groupings of the classes, under distinct names:

* shot groups, by training images per class (the ImageNet-LT / Places-LT / iNaturalist protocol): ``many_shot``
  (> 100), ``medium_shot`` (20-100) and ``few_shot`` (< 20), when the training class counts are known;
* class groups, named classes sets reported under ``class_groups``, e.g. ``head`` / ``medium`` / ``tail`` from
  ``default_class_groups(train_counts)`` for a 10-class long-tailed set such as CIFAR-10-LT.

A group's accuracy is the mean of its classes' accuracies (not pooled over its samples). The counts stay on the
device of the logits and are updated in place, with no host sync per batch; the K x K confusion matrix is only
accumulated when asked for (``confusion=True``).

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist

from .layers.camc import check_class_indices

__all__ = ['confusion_matrix', 'accuracy_by_group', 'default_class_groups', 'LongTailMetrics']


def _check_labels(labels: torch.Tensor, num_classes: int, what: str = 'targets') -> None:
    """Raises ValueError unless ``labels`` is a 1-D integer tensor with values in [0, num_classes).

    The range is checked on the device for accelerator tensors (see ``check_class_indices``): no host sync.
    """
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f'{what} must be a 1-D tensor of integer class indices, got {labels.dtype} '
                         f'of shape {tuple(labels.shape)}')
    check_class_indices(labels, num_classes, what)


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
    confmat = torch.zeros(num_classes, num_classes, dtype=torch.long, device=targets.device)
    _add_confusion(confmat, preds, targets)
    return confmat


def _add_confusion(confmat: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor) -> None:
    """Adds a batch to a K x K confusion matrix in place (one ``index_add_``, no K x K temporary)."""
    num_classes = confmat.shape[0]
    index = targets.long() * num_classes + preds.long()
    confmat.view(-1).index_add_(0, index, torch.ones_like(index))


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


def default_class_groups(
        num_classes: int,
        train_counts: Optional[Union[Sequence[int], torch.Tensor]] = None,
) -> Optional[Dict[str, List[int]]]:
    """Head / medium / tail class groups where the customary split applies: a long-tailed 10-class training set.

    CIFAR-10-LT reports the 3 most frequent training classes as head, the next 4 as medium and the 3 least frequent
    as tail. The groups are taken from the training counts (ties keep the class order), not from the class indices,
    so they are only given when the counts are known and not all equal: any other 10-class dataset, a balanced one or
    one without counts gets None, and so does any other class count (use the shot groups by training count there).

    Args:
        num_classes: Number of classes K.
        train_counts: Training images per class (length K).

    Returns:
        Group name -> class indices, or None.
    """
    if num_classes != 10 or train_counts is None:
        return None
    counts = torch.as_tensor(train_counts).detach().cpu()
    if counts.shape != (num_classes,) or bool((counts == counts[0]).all()):
        return None
    order = torch.sort(-counts.long(), stable=True).indices.tolist()
    return {'head': sorted(order[:3]), 'medium': sorted(order[3:7]), 'tail': sorted(order[7:])}


class LongTailMetrics:
    """Accumulated top-1 / top-5, per-class, shot-group and class-group accuracy for long-tailed classification.

    Usage: ``reset()``, ``update(logits, targets)`` per batch, ``sync()`` on every rank after the last batch
    (a no-op without ``torch.distributed``), then ``compute()``. ``sync()`` keeps the local counts, so calling
    it twice does not double-count; an ``update()`` after it drops the synced result until the next ``sync()``.

    The state is K per-class correct counts, K support counts and the top-5 hits, on the device of the logits and
    updated in place: ``update()`` never waits for the device (out-of-range labels on an accelerator fail at the next
    synchronising call), and ``sync()`` all-reduces 2K + 1 numbers. The K x K confusion matrix costs 8 K^2 bytes
    (530 MB at K = 8,142) and is accumulated only with ``confusion=True``.

    ``compute()`` returns a dict with:

    * ``top1``, ``top5``: accuracy in percent (``top5`` is None when K < 5; both None before any sample),
    * ``per_class``: list of K accuracies in percent, None for classes without test samples,
    * ``num_samples``: number of samples seen,
    * with ``train_counts``, the shot groups: ``many_shot`` (> ``many_thresh`` training images), ``medium_shot``
      (``few_thresh`` to ``many_thresh`` inclusive) and ``few_shot`` (< ``few_thresh``) accuracies (None for an
      empty group), ``shot_group_sizes`` (classes per group, same three keys), ``many_thresh`` and ``few_thresh``,
    * with ``class_groups``: ``class_groups`` (name -> accuracy) and ``class_group_sizes`` (name -> classes).

    The confusion matrix (``confusion=True``) is a tensor from ``confusion_matrix()``, not part of this dict: as
    nested lists it would cost gigabytes at large K.

    Group accuracies are means of per-class accuracies over the group's classes that have test samples.
    """
    shot_group_names = ('many_shot', 'medium_shot', 'few_shot')

    def __init__(
            self,
            num_classes: int,
            train_counts: Optional[Union[Sequence[int], torch.Tensor]] = None,
            many_thresh: int = 100,
            few_thresh: int = 20,
            class_groups: Optional[Mapping[str, Sequence[int]]] = None,
            confusion: bool = False,
            device: Optional[Union[str, torch.device]] = None,
    ):
        """
        Args:
            num_classes: Number of classes K.
            train_counts: Training images per class (length K), for the many / medium / few-shot groups.
            many_thresh: Classes with more training images than this are many-shot.
            few_thresh: Classes with fewer training images than this are few-shot.
            class_groups: Group name -> class indices, reported in addition (e.g. ``default_class_groups``).
            confusion: Also accumulate the K x K confusion matrix (``confusion_matrix()``, and in ``compute()``).
            device: Device of the counts (default: the CPU until the first ``update()`` moves them to the logits').
        """
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        if few_thresh > many_thresh:
            raise ValueError(f'few_thresh ({few_thresh}) must not exceed many_thresh ({many_thresh})')
        self.num_classes = num_classes
        self.many_thresh = many_thresh
        self.few_thresh = few_thresh
        self.confusion = confusion
        self.device = torch.device(device) if device is not None else torch.device('cpu')

        self.shot_groups: Optional[Dict[str, List[int]]] = None
        if train_counts is not None:
            counts = torch.as_tensor(train_counts).detach().cpu()
            if counts.dim() != 1 or counts.numel() != num_classes:
                raise ValueError(f'train_counts must have one entry per class ({num_classes}), '
                                 f'got shape {tuple(counts.shape)}')
            if (counts < 0).any():
                raise ValueError('train_counts must be non-negative')
            masks = (counts > many_thresh, (counts >= few_thresh) & (counts <= many_thresh), counts < few_thresh)
            self.shot_groups = {
                name: mask.nonzero().flatten().tolist() for name, mask in zip(self.shot_group_names, masks)}

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
        # one buffer: [correct (K), support (K), top-5 hits (1)], summed over ranks by a single all-reduce
        self._counts = torch.zeros(2 * self.num_classes + 1, dtype=torch.long, device=self.device)
        self.confmat: Optional[torch.Tensor] = None
        if self.confusion:
            self.confmat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long, device=self.device)
        self._synced: Optional[torch.Tensor] = None  # _counts summed over ranks
        self._synced_confmat: Optional[torch.Tensor] = None

    @property
    def correct(self) -> torch.Tensor:
        """Correct top-1 predictions per true class (local to this rank), K int64."""
        return self._counts[:self.num_classes]

    @property
    def support(self) -> torch.Tensor:
        """Samples per true class (local to this rank), K int64."""
        return self._counts[self.num_classes:2 * self.num_classes]

    def _to(self, device: torch.device) -> None:
        self.device = device
        self._counts = self._counts.to(device)
        if self.confmat is not None:
            self.confmat = self.confmat.to(device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds a batch (in place on the device of ``logits``, without waiting for it).

        Args:
            logits: Class scores (B, K).
            targets: True class indices (B,), int64 in [0, K).
        """
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f'logits must have shape (B, {self.num_classes}), got {tuple(logits.shape)}')
        if targets.dim() == 1 and targets.shape[0] != logits.shape[0]:
            raise ValueError(f'{logits.shape[0]} logits rows but {targets.shape[0]} targets')
        _check_labels(targets, self.num_classes, 'targets')
        targets = targets.to(logits.device, torch.long, non_blocking=True)
        if self._counts.device != logits.device:
            self._to(logits.device)
        K = self.num_classes
        preds = logits.argmax(dim=1)
        hits = (preds == targets).long()
        self._counts.index_add_(0, targets, hits)  # correct
        self._counts.index_add_(0, targets + K, torch.ones_like(targets))  # support
        if K >= 5:
            top5 = logits.topk(5, dim=1).indices
            self._counts[-1:] += (top5 == targets.unsqueeze(1)).any(dim=1).sum()
        if self.confmat is not None:
            _add_confusion(self.confmat, preds, targets)
        self._synced = self._synced_confmat = None

    def sync(self, group: Optional[dist.ProcessGroup] = None) -> None:
        """Sums the counts over the ranks of ``group`` (all ranks must call it); no-op without distributed.

        Args:
            group: Process group, the default group when None.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        nccl = dist.get_backend(group) == dist.Backend.NCCL

        def reduced(local: torch.Tensor) -> torch.Tensor:
            state = local.clone()
            if nccl and state.device.type != 'cuda':
                state = state.to(torch.device('cuda', torch.cuda.current_device()))
            dist.all_reduce(state, op=dist.ReduceOp.SUM, group=group)
            return state

        self._synced = reduced(self._counts)
        self._synced_confmat = reduced(self.confmat) if self.confmat is not None else None

    def confusion_matrix(self) -> torch.Tensor:
        """The K x K confusion matrix (rows = true class; synced when ``sync()`` was called), on the CPU.

        Raises:
            RuntimeError: The metrics were created without ``confusion=True``.
        """
        if self.confmat is None:
            raise RuntimeError('LongTailMetrics(confusion=True) accumulates the confusion matrix; this one does not')
        return (self.confmat if self._synced_confmat is None else self._synced_confmat).cpu()

    def compute(self) -> Dict[str, object]:
        """The metrics (after ``sync()`` when distributed); see the class docstring for the keys."""
        state = (self._counts if self._synced is None else self._synced).cpu()
        K = self.num_classes
        correct, support, top5_hits = state[:K], state[K:2 * K], int(state[2 * K])
        num_samples = int(support.sum())
        per_class = [100. * c / n if n else None for c, n in zip(correct.tolist(), support.tolist())]
        out = {
            'top1': 100. * int(correct.sum()) / num_samples if num_samples else None,
            'top5': 100. * top5_hits / num_samples if num_samples and K >= 5 else None,
            'per_class': per_class,
            'num_samples': num_samples,
        }
        if self.shot_groups is not None:
            out.update(accuracy_by_group(per_class, self.shot_groups))
            out['shot_group_sizes'] = {name: len(idx) for name, idx in self.shot_groups.items()}
            out['many_thresh'] = self.many_thresh
            out['few_thresh'] = self.few_thresh
        if self.class_groups is not None:
            out['class_groups'] = accuracy_by_group(per_class, self.class_groups)
            out['class_group_sizes'] = {name: len(idx) for name, idx in self.class_groups.items()}
        return out
