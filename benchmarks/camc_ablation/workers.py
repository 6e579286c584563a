"""The worker processes that train the runs, and the driver that deals the runs out, answers the workers' fit
requests and writes the results file as records arrive."""
import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import torch

import ablation_report

from . import budget
from .budget import fit_plan
from .records import make_record
from .rows import RunSpec
from .schedule import Schedule
from .trainer import DeviceData, RunTrainer, TrainConfig

__all__ = ['run_worker', 'Driver']

_logger = logging.getLogger('ablation')


class _InlineComm:
    """Worker <-> driver messages when the worker runs in the driver's process."""

    def __init__(self, driver: 'Driver'):
        self.driver = driver

    def fit(self, report: Dict[str, Any]) -> Dict[str, Any]:
        return self.driver.decide([report])

    def send(self, kind: str, payload: Any) -> None:
        self.driver.handle(kind, payload)


class _QueueComm:
    def __init__(self, worker: int, outbox, inbox):
        self.worker, self.outbox, self.inbox = worker, outbox, inbox

    def fit(self, report: Dict[str, Any]) -> Dict[str, Any]:
        self.outbox.put(('fit', report))
        return self.inbox.get()

    def send(self, kind: str, payload: Any) -> None:
        self.outbox.put((kind, payload))


def _device_for(spec: str, worker: int) -> torch.device:
    device = torch.device(spec)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('--device cuda but CUDA is not available')
        if device.index is None:
            device = torch.device('cuda', worker % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def run_worker(worker: int, runs: Sequence[RunSpec], job: Mapping[str, Any], comm) -> None:
    """Train ``runs`` (``streams`` at a time), evaluate them and send one record each."""
    threads = torch.get_num_threads()
    if job['threads']:
        torch.set_num_threads(job['threads'])
    try:
        _run_worker(worker, runs, job, comm)
    finally:
        torch.set_num_threads(threads)  # the worker may run inside the driver's process


def _run_worker(worker: int, runs: Sequence[RunSpec], job: Mapping[str, Any], comm) -> None:
    cfg: TrainConfig = job['cfg']
    try:
        device = _device_for(job['device'], worker)
        if device.type == 'cuda':
            torch.backends.cudnn.benchmark = True
        data = DeviceData(job['data'], device)
        norm = job['normalization']
        mean = torch.tensor(norm['mean'], device=device).view(1, 3, 1, 1)
        std = torch.tensor(norm['std'], device=device).view(1, 3, 1, 1)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if cfg.compile:  # one compiled model per run: dynamo's default cache would fall back to eager after 8
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(runs))
            torch._dynamo.config.accumulated_cache_size_limit = max(
                torch._dynamo.config.accumulated_cache_size_limit, 8 * len(runs))
    except Exception as e:
        for spec in runs:
            comm.send('failed', dict(run=spec.key, error=f'worker {worker} setup: {e!r}', trace=traceback.format_exc()))
        comm.send('done', worker)
        return
    streams = job['streams'] or len(runs)
    waves = [list(runs[i:i + streams]) for i in range(0, len(runs), streams)]
    # fit after the first calib_epochs epochs, and again calib_epochs later on the rate of the runs that were kept
    fitting = job['fit'] != 'none' and not job['measure']
    fit_points = {job['calib_epochs'], 2 * job['calib_epochs']} if fitting else set()
    if fit_points and len(waves) > 1:
        _logger.warning(f'worker {worker}: --fit needs all runs of a process at once (--streams 0): not fitting')
        fit_points = set()
    schedule = Schedule.for_epochs(cfg.epochs, cfg.lr, cfg.warmup_epochs)
    for wave in waves:
        trainers = []
        for spec in wave:
            try:
                trainers.append(RunTrainer(spec, data, cfg, schedule, mean, std))
            except Exception as e:
                comm.send('failed', dict(run=spec.key, error=repr(e), trace=traceback.format_exc()))
        if not trainers:
            continue
        _logger.info(f'worker {worker}: {len(trainers)} runs set up ({sum(t.setup_s for t in trainers):.1f}s); '
                     f'cuda graphs: {sum(t.graph_info.get("used", False) for t in trainers)}/{len(trainers)}')
        epoch_times: List[float] = []
        run_start = budget.now()
        epoch = 0
        stop_at = job['measure_epochs'] if job['measure'] else None
        while True:
            active = [t for t in trainers if t.status == 'active']
            if not active or epoch >= schedule.epochs or (stop_at is not None and epoch >= stop_at):
                break
            if epoch in fit_points:
                fit_points.discard(epoch)
                plan = comm.fit(dict(worker=worker, runs=[t.spec.key for t in active], epoch=epoch,
                                     epochs=schedule.epochs,
                                     epoch_s=float(np.median(epoch_times[-job['calib_epochs']:]))))
                if plan['epochs'] != schedule.epochs:
                    schedule = Schedule.for_epochs(plan['epochs'], cfg.lr, cfg.warmup_epochs)
                    for t in trainers:
                        t.set_schedule(schedule)
                for t in active:
                    if t.spec.key not in plan['keep']:
                        t.status, t.stop_reason = 'skipped', 'dropped to fit the time budget'
                continue
            estimate = max(epoch_times[-3:]) if epoch_times else 0.
            if budget.now() + estimate > job['deadline']:
                for t in active:
                    t.status, t.stop_reason = 'stopped', 'time_budget'
                _logger.warning(f'worker {worker}: time budget reached before epoch {epoch}: stopping '
                                f'{len(active)} runs and evaluating them as they are')
                break
            tick = budget.now()
            for t in active:
                t.guarded(t.begin_epoch, epoch)
            for step in range(active[0].steps):
                for t in active:
                    if t.status == 'active':
                        t.guarded(t.train_step, step)
            for t in active:
                if t.status == 'active':
                    t.guarded(t.end_epoch)
            epoch_times.append(budget.now() - tick)
            comm.send('progress', dict(worker=worker, epoch=epoch, epoch_s=epoch_times[-1],
                                       losses={t.spec.key: t.train_losses[-1] for t in active}))
            epoch += 1
        if stop_at is not None:
            for t in trainers:
                if t.status == 'active':
                    t.status, t.stop_reason = 'stopped', 'measure'
        ctx = dict(data=job['data'], env=job['env'], normalization=job['normalization'], run_start=run_start,
                   concurrent=len(trainers), worker=worker, procs=job['procs'], measure=job['measure'])
        for t in trainers:
            if t.status == 'skipped':
                comm.send('skipped', dict(run=t.spec.key, reason=t.stop_reason, epochs_completed=t.epochs_completed))
                continue
            if t.status == 'active':
                t.status = 'done'
            try:
                metrics = t.evaluate()
            except Exception as e:
                metrics = None
                t.stop_reason = f'evaluation failed: {e!r}'
            comm.send('record', make_record(t, metrics, ctx, epoch_times))
        del trainers
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    comm.send('done', worker)


def _worker_main(worker: int, runs, job, outbox, inbox, log_level: int) -> None:
    logging.basicConfig(level=log_level, format=f'%(asctime)s [w{worker}] %(message)s', datefmt='%H:%M:%S')
    comm = _QueueComm(worker, outbox, inbox)
    try:
        run_worker(worker, runs, job, comm)
    except Exception as e:  # never leave the driver waiting
        outbox.put(('failed', dict(run=f'worker{worker}', error=repr(e), trace=traceback.format_exc())))
        outbox.put(('done', worker))


class Driver:
    """Splits the runs over processes, answers their fit requests, and writes the results as they arrive."""

    def __init__(self, args: argparse.Namespace, runs: Sequence[RunSpec], job: Dict[str, Any], out_path: Path):
        self.args, self.runs, self.job, self.out_path = args, list(runs), job, out_path
        self.records: List[Dict[str, Any]] = []
        self.failed: List[Dict[str, Any]] = []
        self.skipped: List[Dict[str, Any]] = []
        self.plans: List[Dict[str, Any]] = []
        self.progress: Dict[int, Any] = {}
        self.start = job['start']

    def decide(self, reports: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        priority = [r.key for r in self.runs]
        # the core: the first two seeds of the most important tier in this run (tier 0 in the full grid)
        measured = {k for r in reports for k in r['runs']}
        top = min((r.row.tier for r in self.runs if r.key in measured), default=0)
        core = [r.key for r in self.runs if r.row.tier == top and r.seed_index < 2]
        time_left = self.job['deadline'] - budget.now()
        plan = fit_plan(reports, priority, max(r['epochs'] for r in reports), min(r['epoch'] for r in reports),
                        time_left, self.args.fit, core, margin=self.args.fit_margin)
        plan.update(at_epoch=min(r['epoch'] for r in reports), reports=list(reports))
        self.plans.append(plan)
        _logger.info(f'Fit ({plan["policy"]}) at epoch {plan["at_epoch"]}: {plan["rate_epochs_per_s"]:.2f} epochs/s '
                     f'over all runs, {time_left:.0f}s left -> {len(plan["keep"])} runs x {plan["epochs"]} epochs '
                     f'(predicted {plan["predicted_s"]:.0f}s); dropped: {plan["drop"] or "none"}')
        self.write()
        return plan

    def handle(self, kind: str, payload: Any) -> None:
        if kind == 'record':
            self.records.append(payload)
            r = payload
            _logger.info(f'{r["row"]}/s{r["seed"]}: top-1 {r.get("top1")} after {r["epochs_completed"]}/'
                         f'{r["epochs"]} epochs ({r["scale"]})')
            self.write()
        elif kind == 'failed':
            self.failed.append(payload)
            _logger.error(f'{payload["run"]} failed: {payload["error"]}\n{payload.get("trace", "")}')
            self.write()
        elif kind == 'skipped':
            self.skipped.append(payload)
        elif kind == 'progress':
            self.progress[payload['worker']] = payload
            if payload['epoch'] % self.args.log_every == 0:
                losses = ', '.join(f'{k} {v:.3f}' for k, v in payload['losses'].items())
                _logger.info(f'w{payload["worker"]} epoch {payload["epoch"]} {payload["epoch_s"]:.2f}s '
                             f'({budget.now() - self.start:.0f}s elapsed): {losses}')
                self.write()  # how far the runs got, should the process be killed

    def write(self) -> None:
        records = sorted(self.records, key=lambda r: (r['row_order'], r['seed']))
        scales = sorted({r['scale'] for r in records})
        doc = dict(
            benchmark='cifar10_lt_ablation',
            scale=scales[0] if len(scales) == 1 else ('mixed: ' + ', '.join(scales) if scales else 'none'),
            note=ablation_report.scale_note(scales[0] if len(scales) == 1 else 'mixed'),
            created_utc=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            elapsed_s=round(budget.now() - self.start, 1), config=self.job['config'], fit=self.plans,
            data={k: v for k, v in self.job['data'].items() if k != 'paths'}, normalization=self.job['normalization'],
            runs_planned=[r.key for r in self.runs],
            progress=self.progress, skipped=self.skipped, failed=self.failed, records=records, **self.job['env'])
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out_path.with_name('.' + self.out_path.name + '.tmp')
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, self.out_path)

    def run(self) -> None:
        procs = max(1, min(self.args.procs, len(self.runs)))
        shares = [self.runs[i::procs] for i in range(procs)]  # round-robin: every process gets high-priority runs
        if procs == 1:
            try:
                run_worker(0, shares[0], self.job, _InlineComm(self))
            except Exception as e:
                self.handle('failed', dict(run='worker0', error=repr(e), trace=traceback.format_exc()))
            self.write()
            return
        ctx = mp.get_context('spawn')
        outbox = ctx.Queue()
        inboxes = [ctx.Queue() for _ in range(procs)]
        workers = [ctx.Process(target=_worker_main, args=(w, shares[w], self.job, outbox, inboxes[w],
                                                          _logger.getEffectiveLevel()))
                   for w in range(procs)]
        for p in workers:
            p.start()
        done, fit_reports = set(), {}
        while len(done) < procs:
            try:
                kind, payload = outbox.get(timeout=1.0)
            except queue.Empty:
                for w, p in enumerate(workers):
                    if w not in done and not p.is_alive():
                        self.handle('failed', dict(run=f'worker{w}', error=f'process exited with {p.exitcode}'))
                        done.add(w)
                kind = None
            if kind == 'done':
                done.add(payload)
            elif kind == 'fit':
                fit_reports[payload['worker']] = payload
            elif kind is not None:
                self.handle(kind, payload)
            waiting = [w for w in range(procs) if w not in done]
            if fit_reports and all(w in fit_reports for w in waiting):
                plan = self.decide([fit_reports[w] for w in sorted(fit_reports)])
                for w in fit_reports:
                    inboxes[w].put(plan)
                fit_reports = {}
        for p in workers:
            p.join(timeout=30)
        self.write()
