#!/usr/bin/env python3
"""CIFAR-10-LT ablation of the CAMC head: every row of the project's "Proof" table in one prepared run.

ResNet-32 (``resnet32_camc_lt``) on the long-tailed CIFAR-10 JPEG images (exponential profile, IF 100, the LDAM-DRW
construction: per-class shuffle with seed 0, then the first n_i), the LDAM-DRW schedule (SGD with momentum 0.9,
weight decay 2e-4, lr 0.1, batch 128, 5 warm-up epochs at 0.02, 0.04, ..., 0.1, lr x0.01 from 80 % and x0.0001 from
90 % of the epochs, i.e. epochs 160 and 180 of 200, random crop with 4-pixel padding and horizontal flip), evaluated
on the balanced test split. The rows are declared in ``ROWS``; each (row, seed) pair is one run, and every run of a
seed starts from the same weights and sees the same images in the same order with the same augmentation.

Engineering for one GPU, where ResNet-32 on 12.4k images is bound by kernel launches, not by arithmetic:

* the JPEGs are decoded once into uint8 .npy arrays (cached in ``--work-dir``) and held on the device as uint8;
* each epoch is augmented on the device in a few batched kernels (pad-4 random crop as one gather, the flip folded
  into the gather index), in the order of the library's seeded sampler, into a normalised (bf16) epoch buffer;
* each run's training step (forward with labels, loss, backward, SGD step) is captured once in a CUDA graph; the
  learning rate lives in a device tensor read by the fused SGD kernel, so the schedule needs no re-capture
  (LDAM's deferred re-weighting gets a second graph); a self-check compares one replayed step with one eager step;
* the runs of a process replay their graphs on separate CUDA streams, so their kernels overlap on the GPU;
  ``--procs`` splits the runs over processes.

On the CPU the same code runs eagerly. ``--data-dir DIR`` runs the same ablation on any class-per-folder tree
(``DIR/train/<class>/*``, ``DIR/test/<class>/*``) at ``--img-size``, with any CAMC ``--model``.

``--fit auto`` measures the throughput during the first epochs and then keeps the runs (in priority order) and the
epochs that finish within ``--time-budget``; anything short of the full protocol is labelled as such in the results
(``scale``), and ``ablation_report.py`` refuses to call it the benchmark.

    python benchmarks/ablation.py --device cpu --epochs 2 --train-per-class-max 50 --test-per-class 20 \\
        --rows ce,cosine_s16,camc_global --seeds 0                      # CPU dry run, says nothing about accuracy
    python benchmarks/ablation.py --device cuda --measure               # ~1 min: epochs/s of every run
    python benchmarks/ablation.py --device cuda --fit auto --time-budget 480 --out "$OUT"   # the ablation
    python benchmarks/ablation_report.py benchmarks/results/ablation_gpu.json --benchmark   # README table

The code is the package ``camc_ablation`` beside this script (rows, schedule, data, trainer, budget, records,
workers, cli); this script is its command line and re-exports what tests and users import from ``ablation``.
See benchmarks/README_ABLATION.md.
"""
from camc_ablation.budget import fit_plan, now
from camc_ablation.cli import main, parser
from camc_ablation.data import ARCHIVE_NAME, ARCHIVE_SHA256, find_archive, lt_counts, prepare_data, select_samples
from camc_ablation.protocol import (
    BENCHMARK_RECIPE, DEFAULT_MODEL, FULL_EPOCHS, FULL_TEST_PER_CLASS, FULL_TRAIN_PER_CLASS, IMG_SIZE, REPO)
from camc_ablation.records import environment, make_record, measure_summary, scale_label
from camc_ablation.rows import ROW_INDEX, ROWS, Row, RunSpec, plan_runs, select_rows
from camc_ablation.schedule import Schedule
from camc_ablation.trainer import (
    DeviceData, RunTrainer, TrainConfig, build_loss, build_model, loss_mode, loss_modes, spatial_correlation)
from camc_ablation.workers import Driver, run_worker

__all__ = [
    'ARCHIVE_NAME', 'ARCHIVE_SHA256', 'BENCHMARK_RECIPE', 'DEFAULT_MODEL', 'FULL_EPOCHS', 'FULL_TEST_PER_CLASS',
    'FULL_TRAIN_PER_CLASS', 'IMG_SIZE', 'REPO', 'ROWS', 'ROW_INDEX', 'DeviceData', 'Driver', 'Row', 'RunSpec',
    'RunTrainer', 'Schedule', 'TrainConfig', 'build_loss', 'build_model', 'environment', 'find_archive', 'fit_plan',
    'loss_mode', 'loss_modes', 'lt_counts', 'main', 'make_record', 'measure_summary', 'now', 'parser', 'plan_runs',
    'prepare_data', 'run_worker', 'scale_label', 'select_rows', 'select_samples', 'spatial_correlation']

if __name__ == '__main__':
    main()
