"""One run of the ablation: its model and loss, and ``RunTrainer``, which trains and evaluates it.

On a GPU the run's training step (forward with labels, loss, backward, SGD step) is captured once in a CUDA graph per
loss mode, with the learning rate in a device tensor that the fused SGD kernel reads; on the CPU it runs eagerly.
"""
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import timm
from timm.optim import param_groups_weight_decay
from timm_camc.data import create_sampler
from timm_camc.data.in_memory import PAD_CROP_PADDING, augment_epoch, augment_seed, normalize
from timm_camc.layers import HEAD_DEFAULTS
from timm_camc.loss import CamcLoss, classifier_loss_kwargs, create_loss
from timm_camc.metrics import LongTailMetrics, default_class_groups

from .protocol import CIFAR10_CLASSES, DEFAULT_MODEL
from .rows import LINEAR, Row, RunSpec
from .schedule import Schedule

__all__ = ['build_model', 'build_loss', 'loss_modes', 'loss_mode', 'DeviceData', 'TrainConfig', 'RunTrainer',
           'spatial_correlation']

_logger = logging.getLogger('ablation')


def build_model(row: Row, seed: int, model_name: str = DEFAULT_MODEL, num_classes: int = CIFAR10_CLASSES) -> nn.Module:
    """The row's model, initialised identically for every row of a seed.

    Every model gets the backbone and classifier weights of one reference model (the plain linear model created
    under ``torch.manual_seed(seed)``); the CAMC map conv starts at zero and the prototypes empty, as always. Without
    this, the head's parameters (drawn before the backbone's re-initialisation) would shift the backbone's random
    stream, and rows would differ in their initialisation, not only in their method.

    Args:
        row: The row (its ``model_kwargs`` are head options).
        seed: The run's seed.
        model_name: Any CAMC model (``resnet32_camc_lt``, ``resnet50_camc_lt``, ...).
        num_classes: Classes of the data.
    """
    torch.manual_seed(seed)
    reference = timm.create_model(model_name, num_classes=num_classes, **LINEAR).state_dict()
    torch.manual_seed(seed)
    model = timm.create_model(model_name, num_classes=num_classes, **row.model_kwargs)
    own = model.state_dict()
    shared = {k: v for k, v in reference.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return model


def build_loss(row: Row, class_counts: Sequence[int], schedule: Schedule) -> CamcLoss:
    """``CamcLoss(create_loss(...))`` with the row's kwargs over what the loss needs to know about the classifier
    (``classifier_loss_kwargs``, the rule train.py uses); LDAM's DRW epoch comes from the schedule."""
    head = dict(HEAD_DEFAULTS, **row.model_kwargs)
    kwargs = dict(classifier_loss_kwargs(row.loss, head['cosine_scale'] if head['norm_classifier'] else None),
                  **row.loss_kwargs)
    if row.loss == 'ldam':
        kwargs.setdefault('drw_epoch', schedule.drw_epoch)
    return CamcLoss(create_loss(row.loss, list(class_counts), **kwargs),
                    calib_warmup=schedule.epoch_at(row.calib_warmup))


def _criterion_state(loss_fn: nn.Module) -> Dict[str, Any]:
    """The plain attributes of the loss and of the criterion it wraps (e.g. ``calibrating``, ``drw_active``)."""
    state = {}
    for module in (loss_fn, getattr(loss_fn, 'criterion', loss_fn)):
        state.update({k: v for k, v in vars(module).items()
                      if not k.startswith('_') and isinstance(v, (bool, int, float, str, type(None)))})
    return state


def loss_modes(loss_fn: nn.Module, epochs: int) -> Tuple[Tuple[str, ...], Dict[Tuple, int]]:
    """What ``set_epoch`` switches in a criterion over ``epochs`` (e.g. LDAM's ``drw_active``).

    A captured CUDA graph holds the code path of one such state, so each distinct state (mode) gets its own graph.

    Returns:
        The names of the attributes that change with the epoch, and one representative epoch per mode (keyed by the
        values of those attributes, see ``loss_mode``).
    """
    states = []
    for epoch in range(epochs):
        loss_fn.set_epoch(epoch)
        states.append(_criterion_state(loss_fn))
    loss_fn.set_epoch(0)
    names = tuple(sorted(k for k in states[0] if any(s.get(k) != states[0][k] for s in states)))
    modes: Dict[Tuple, int] = {}
    for epoch, state in enumerate(states):
        modes.setdefault(tuple(state[k] for k in names), epoch)
    return names, modes


def loss_mode(loss_fn: nn.Module, names: Sequence[str]) -> Tuple:
    """The current mode of a criterion: the values of the epoch-dependent attributes ``names``."""
    state = _criterion_state(loss_fn)
    return tuple(state.get(k) for k in names)


class DeviceData:
    """The decoded images of one process on its device: uint8 training images (pre-padded) and test images, and
    what the data says about itself (classes, image size, training counts)."""

    def __init__(self, meta: Mapping[str, Any], device: torch.device):
        paths = meta['paths']
        train = torch.from_numpy(np.load(paths['train_x'])).permute(0, 3, 1, 2).contiguous()
        pad = PAD_CROP_PADDING  # the recipe's pad-4 random crop, at any image size
        self.train_padded = F.pad(train, (pad, pad, pad, pad)).to(device)
        self.train_y = torch.from_numpy(np.load(paths['train_y'])).to(device)
        self.test_x = torch.from_numpy(np.load(paths['test_x'])).permute(0, 3, 1, 2).contiguous().to(device)
        self.test_y = torch.from_numpy(np.load(paths['test_y'])).to(device)
        for name, y in (('training', self.train_y), ('test', self.test_y)):
            if int(y.min()) < 0 or int(y.max()) >= meta['num_classes']:  # the one label check (graphs skip theirs)
                raise ValueError(f'{name} labels outside [0, {meta["num_classes"]})')
        self.train_targets = np.load(paths['train_y']).tolist()
        self.class_counts = list(meta['class_counts'])
        self.num_classes = int(meta['num_classes'])
        self.img_size = int(self.test_x.shape[-1])
        self.device = device
        if device.type == 'cuda':
            torch.cuda.synchronize(device)  # the runs read these from their own streams


@dataclass
class TrainConfig:
    """What every worker needs: the model, the recipe and the engineering switches (picklable)."""
    epochs: int
    model: str = DEFAULT_MODEL
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    warmup_epochs: int = 5
    amp: str = 'bf16'
    channels_last: bool = True
    cuda_graphs: bool = True
    graph_check: bool = True
    compile: bool = False
    eval_batch_size: int = 1000


class RunTrainer:
    """Model, loss, optimizer, epoch buffers and (on CUDA) the captured training step of one (row, seed) run.

    All of the run's device work is issued on its own CUDA stream, so the runs of a process overlap on the GPU.
    """

    def __init__(self, spec: RunSpec, data: DeviceData, cfg: TrainConfig, schedule: Schedule, mean, std):
        self.spec = spec
        self.data = data
        self.cfg = cfg
        self.schedule = schedule
        self.device = data.device
        self.cuda = self.device.type == 'cuda'
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.amp_dtype = torch.bfloat16 if cfg.amp == 'bf16' else None
        self.input_dtype = self.amp_dtype or torch.float32
        self.mean, self.std = mean, std
        self.status = 'active'  # active | done | stopped | failed | skipped
        self.stop_reason: Optional[str] = None
        self.epochs_completed = 0
        self.train_losses: List[float] = []
        self.graph_info: Dict[str, Any] = dict(used=False)
        self.compiled = False
        num_train = len(data.train_targets)
        self.steps = num_train // cfg.batch_size  # the last incomplete batch is dropped (static shapes)
        if self.steps == 0:
            raise ValueError(f'{num_train} training images are fewer than one batch of {cfg.batch_size}')
        start = time.time()
        with self._on_stream():
            model = build_model(spec.row, spec.seed, cfg.model, data.num_classes).to(self.device)
            if cfg.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.model = model.train()
            self.forward = model
            if cfg.compile:
                self.forward = torch.compile(model, dynamic=False)
                self.compiled = True
            self.loss_fn = build_loss(spec.row, data.class_counts, schedule).to(self.device)
            self.lr = torch.tensor(schedule.lr_at(0), dtype=torch.float32, device=self.device)
            self.optimizer = torch.optim.SGD(
                param_groups_weight_decay(model, cfg.weight_decay), lr=self.lr, momentum=cfg.momentum,
                nesterov=cfg.nesterov, fused=True)
            self.sampler = create_sampler(spec.row.sampler, data.train_targets, seed=spec.seed, num_replicas=1, rank=0)
            self.generator = torch.Generator(device=self.device)
            size = data.img_size
            self.x = torch.empty((cfg.batch_size, 3, size, size), dtype=self.input_dtype, device=self.device)
            if cfg.channels_last:
                self.x = self.x.contiguous(memory_format=torch.channels_last)
            self.y = torch.zeros(cfg.batch_size, dtype=torch.long, device=self.device)
            self.loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
            self.init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.graphs: Dict[Tuple, Any] = {}
            self.graph = None
            self.mode_names: Tuple[str, ...] = ()
            if self.cuda and cfg.cuda_graphs:
                self._setup_graphs()
        self.sync()
        self.setup_s = time.time() - start

    # -- helpers ------------------------------------------------------------------------------------------------------
    def _on_stream(self):
        return torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False)  # graphs: no cast cache

    def sync(self) -> None:
        if self.cuda:
            self.stream.synchronize()

    def set_schedule(self, schedule: Schedule) -> None:
        """Switch to a schedule of another length (only between epochs, while the two agree so far)."""
        self.schedule = schedule
        criterion = self.loss_fn.criterion
        if self.spec.row.loss == 'ldam' and 'drw_epoch' not in self.spec.row.loss_kwargs:
            criterion.drw_epoch = schedule.drw_epoch
        self.loss_fn.calib_warmup = schedule.epoch_at(self.spec.row.calib_warmup)

    def reset(self) -> None:
        """Back to the initial weights, buffers and empty momentum, in place (captured graphs stay valid)."""
        with self._on_stream(), torch.no_grad():
            self.model.load_state_dict(self.init_state)
            for state in self.optimizer.state.values():
                buf = state.get('momentum_buffer')
                if buf is not None:
                    buf.zero_()  # one step from a zero buffer equals torch's first step (buffer = gradient)
            self.loss_sum.zero_()

    def _snapshot(self) -> torch.Tensor:
        return torch.cat([v.detach().float().flatten() for v in self.model.state_dict().values()
                          if v.is_floating_point()])

    # -- training -----------------------------------------------------------------------------------------------------
    def _step_body(self) -> None:
        with self._autocast():
            output = self.forward(self.x, self.y)
            loss = self.loss_fn(output, self.y)
        loss.backward()
        self.optimizer.step()
        self.loss_sum.add_(loss.detach().float())

    def _eager_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._step_body()

    def _setup_graphs(self) -> None:
        """Warm up (cuDNN autotuning, lazy kernel loading, the compile if any) in every loss mode, capture one graph
        per mode, check a replayed step against an eager one, and return to the initial state."""
        try:
            self.mode_names, modes = loss_modes(self.loss_fn, self.schedule.epochs)
            for epoch in modes.values():
                self.begin_epoch(epoch, select_graph=False)
                for i in range(3):
                    self._load_batch(i % self.steps)
                    self._eager_step()
            self.sync()
            self.reset()
            for key, epoch in modes.items():
                self.loss_fn.set_epoch(epoch)
                self.graphs[key] = self._capture_step()
            self.loss_fn.set_epoch(0)
            self.graph_info = dict(used=True, modes=len(self.graphs))
            if self.cfg.graph_check:
                self.graph_info['check'] = self._check_graphs(modes)
        except Exception as e:  # fall back to eager steps rather than lose the run
            _logger.warning(f'{self.spec.key}: CUDA graph capture failed, training eagerly: {e!r}')
            self.graphs = {}
            self.graph_info = dict(used=False, error=repr(e)[:500])
            self.sync()
        self.reset()

    def _capture_step(self):
        """The training step as a CUDA graph: gradients are allocated by the captured backward (none exist before),
        so each replay overwrites them; inputs are the static ``x`` / ``y``, the learning rate the ``lr`` tensor."""
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, stream=self.stream):
            self._step_body()
        return graph

    def _check_graphs(self, modes: Mapping[Tuple, int]) -> Dict[str, Any]:
        """One replayed and one eager step from the same state, batch and a learning rate unlike the one at capture
        time: the updates of every weight and buffer must agree (bf16 noise aside), or graphs are switched off."""
        worst = 0.
        for key, epoch in modes.items():
            deltas = []
            for replay in (True, False):
                self.reset()
                self.begin_epoch(epoch)
                self.lr.fill_(0.0731)  # not a schedule value: a learning rate baked into the graph would show
                self._load_batch(0)
                before = self._snapshot()
                if replay:
                    self.graphs[key].replay()
                else:
                    self._eager_step()
                deltas.append(self._snapshot() - before)
            self.sync()
            err = float((deltas[0] - deltas[1]).norm() / deltas[1].norm().clamp_min(1e-12))
            worst = max(worst, err)
        ok = worst < 0.05
        if not ok:
            _logger.error(f'{self.spec.key}: a replayed step differs from an eager one (relative {worst:.3g}): '
                          f'training eagerly')
            self.graphs = {}
            self.graph_info['used'] = False
        return dict(ok=ok, rel_update_diff=worst)

    def begin_epoch(self, epoch: int, select_graph: bool = True) -> None:
        """Learning rate, loss mode, and the epoch's augmented inputs in sampling order (on the run's stream)."""
        with self._on_stream():
            self.lr.fill_(self.schedule.lr_at(epoch))
            self.loss_fn.set_epoch(epoch)
            if select_graph and self.graphs:
                mode = loss_mode(self.loss_fn, self.mode_names)
                self.graph = self.graphs.get(mode)
                if self.graph is None:
                    _logger.warning(f'{self.spec.key}: no graph for loss mode {dict(zip(self.mode_names, mode))}: '
                                    f'eager steps this epoch')
            order = self.sampler.global_indices(epoch)[:self.steps * self.cfg.batch_size].to(self.device)
            self.generator.manual_seed(augment_seed(self.spec.seed, epoch))
            self.epoch_x, self.epoch_y = augment_epoch(
                self.data.train_padded, self.data.train_y, order, self.generator, self.mean, self.std,
                self.input_dtype, self.cfg.channels_last)

    def _load_batch(self, step: int) -> None:
        b = self.cfg.batch_size
        self.x.copy_(self.epoch_x[step * b:(step + 1) * b])
        self.y.copy_(self.epoch_y[step * b:(step + 1) * b])

    def train_step(self, step: int) -> None:
        with self._on_stream():
            self._load_batch(step)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._eager_step()

    def guarded(self, fn: Callable, *args) -> None:
        """``fn(*args)``; an exception fails this run (logged, recorded), not the others of the process."""
        try:
            fn(*args)
        except Exception as e:
            _logger.exception(f'{self.spec.key} failed in epoch {self.epochs_completed}')
            self.status, self.stop_reason = 'failed', f'error: {e!r}'[:500]

    def end_epoch(self) -> None:
        """Mean training loss of the epoch (after the device work is done); a non-finite loss stops the run."""
        self.sync()
        with self._on_stream():
            loss = float(self.loss_sum) / self.steps
            self.loss_sum.zero_()
        self.train_losses.append(loss)
        self.epochs_completed += 1
        if not math.isfinite(loss):
            self.status, self.stop_reason = 'failed', 'non_finite_loss'

    @torch.no_grad()
    def evaluate(self) -> Dict[str, Any]:
        """Top-1, per-class and class-group accuracy on the test images (``LongTailMetrics``); for a CAMC row also
        ``map_cam_corr``, the median over the test images of the spatial correlation between the calibration map
        ``A`` and the CAM of the predicted class (does the calibration highlight what the class map highlights?)."""
        self.model.eval()
        k = self.data.num_classes
        metrics = LongTailMetrics(k, train_counts=self.data.class_counts,
                                  class_groups=default_class_groups(k, self.data.class_counts))
        head = getattr(self.model, 'head', None)
        explain = getattr(head, 'calib', None) is not None
        corrs = []
        with self._on_stream():
            for start in range(0, len(self.data.test_y), self.cfg.eval_batch_size):
                x = normalize(self.data.test_x[start:start + self.cfg.eval_batch_size], self.mean, self.std,
                              torch.float32, self.cfg.channels_last)
                with (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                      else contextlib.nullcontext()):
                    if explain:
                        out = self.model.explain(x)
                        logits = out['logits']
                        corrs.append(spatial_correlation(out['calibration'].float(), out['cam'].float()))
                    else:
                        logits = self.model(x)
                metrics.update(logits.float(), self.data.test_y[start:start + self.cfg.eval_batch_size])
        self.sync()
        result = metrics.compute()
        if corrs:
            result['map_cam_corr'] = float(torch.cat(corrs).nanmedian())
        return result


def spatial_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the positions of each pair of maps (B x H x W each), NaN for a flat map."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
