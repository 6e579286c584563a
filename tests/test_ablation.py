"""Tests of the CIFAR-10-LT ablation script (benchmarks/ablation.py) and its report, on the CPU and real images."""
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / 'benchmarks'
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import ablation  # noqa: E402
from camc_ablation import budget  # noqa: E402
import ablation_report  # noqa: E402
from timm_camc.data import create_lt_datasets  # noqa: E402

ROWS = {row.name: row for row in ablation.ROWS}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: ResNet-32 steps on a shared 2-core machine run several times faster than with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def work_dir(tmp_path_factory) -> Path:
    """Shared .npy cache of the runs below."""
    return tmp_path_factory.mktemp('ablation_work')


@pytest.fixture
def epoch_clock(monkeypatch):
    """A budget clock that advances 10 s whenever a run finishes an epoch, and at no other time."""
    now = [0.]
    monkeypatch.setattr(budget, 'now', lambda: now[0])  # the one clock every module of the package reads
    end_epoch = ablation.RunTrainer.end_epoch

    def end_epoch_and_tick(self):
        end_epoch(self)
        now[0] += 10.

    monkeypatch.setattr(ablation.RunTrainer, 'end_epoch', end_epoch_and_tick)
    return now


def _tiny_args(data_dir, work_dir, out, *extra):
    """A run that takes seconds: 41 long-tailed training images (2 batches of 16), 5 test images per class."""
    return ['--device', 'cpu', '--data-dir', str(data_dir), '--work-dir', str(work_dir), '--out', str(out),
            '--train-per-class-max', '12', '--test-per-class', '5', '--batch-size', '16', '--seeds', '0', *extra]


# --- long-tailed data, schedule, initialisation ----------------------------------------------------------------------

def test_lt_counts_profile_and_scaling():
    counts, imbalance = ablation.lt_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50] and imbalance == 100
    counts, imbalance = ablation.lt_counts(500, 10, 100)
    assert counts == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5] and imbalance == 100
    counts, imbalance = ablation.lt_counts(50, 10, 100)  # the tail would be empty at IF 100: IF 50, tail of 1
    assert counts[0] == 50 and counts[-1] == 1 and imbalance == 50
    assert counts == sorted(counts, reverse=True)


def test_lt_subset_is_create_lt_datasets(cifar10_small):
    ours = ablation.select_samples(cifar10_small, 100, 100., 0, 20)
    train_ds, val_ds, info = create_lt_datasets(str(cifar10_small), val_split='test', imbalance=100, lt_seed=0)
    assert [ours['train_ds'].samples[i] for i in ours['train_idx']] == train_ds.samples
    assert ours['counts'] == info.class_counts == [100, 59, 35, 21, 12, 7, 4, 2, 1, 1]
    assert len(ours['test_idx']) == 200 and ours['class_names'][0] == 'airplane'


def test_schedule_is_ldam_drw():
    s = ablation.Schedule.for_epochs(200)
    assert [s.lr_at(e) for e in range(6)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])
    assert s.lr_at(159) == pytest.approx(0.1)
    assert s.lr_at(160) == s.lr_at(179) == pytest.approx(1e-3)
    assert s.lr_at(180) == s.lr_at(199) == pytest.approx(1e-5)
    assert s.milestones == (160, 180) and s.drw_epoch == 160
    short = ablation.Schedule.for_epochs(100)
    assert short.milestones == (80, 90) and short.warmup_epochs == 5
    assert [short.lr_at(e) for e in range(3)] == [s.lr_at(e) for e in range(3)]  # --fit may switch after 3 epochs


def _hand_written_lr(epochs, epoch, lr=0.1):
    """The schedule as the ablation computed it by hand before it read timm's scheduler (W = min(5, epochs // 5)
    warm-up epochs at lr (e + 1) / W, then x0.01 from round(0.8 epochs) and x0.0001 from round(0.9 epochs))."""
    warmup = min(5, epochs // 5)
    if epoch < warmup:
        return lr * (epoch + 1) / warmup
    factor = 1.
    for milestone, decay in zip((int(round(0.8 * epochs)), int(round(0.9 * epochs))), (0.01, 0.0001)):
        if epoch >= milestone:
            factor = decay
    return lr * factor


def test_schedule_is_train_py_scheduler_from_the_recipe_config():
    """200 epochs: the learning rates of train.py's scheduler, built from configs/cifar10_lt_r100.yaml through
    train.py's own option parser and timm's scheduler_kwargs / create_scheduler_v2, epoch by epoch."""
    import importlib.util
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs
    from camc_ablation.protocol import RECIPE_CONFIG

    spec = importlib.util.spec_from_file_location('camc_train_sched', BENCHMARKS.parent / 'train.py')
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    args, _ = train._parse_args(['-c', str(RECIPE_CONFIG)])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.lr)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args, decreasing_metric='loss' in args.eval_metric), updates_per_epoch=97)
    train_lrs = []
    for epoch in range(num_epochs):  # train.py steps after each epoch; step(epoch) sets that epoch's rate
        scheduler.step(epoch)
        train_lrs.append(optimizer.param_groups[0]['lr'])
    s = ablation.Schedule.for_epochs(200)
    assert num_epochs == 200 and list(s.lrs) == train_lrs
    expected = [0.02, 0.04, 0.06, 0.08] + [0.1] * 156 + [1e-3] * 20 + [1e-5] * 20
    assert list(s.lrs) == pytest.approx(expected, rel=1e-12, abs=0)
    cfg = s.timm_config()
    assert (cfg['warmup_epochs'], cfg['warmup_lr'], cfg['decay_milestones']) == (4, 0.02, [161, 181])
    assert s.to_dict() == dict(epochs=200, lr=0.1, warmup_epochs=5, decay_at=[0.8, 0.9], decay_factors=[0.01, 0.0001],
                               milestones=[160, 180], drw_epoch=160)  # the records' field, as before


@pytest.mark.parametrize('epochs', [1, 2, 4, 5, 8, 10, 24, 25, 40, 100, 200])
def test_schedule_keeps_the_hand_written_values(epochs):
    """Scaled runs (the CPU screens ran 24 epochs) keep the learning rates the hand-written schedule gave."""
    s = ablation.Schedule.for_epochs(epochs)
    assert len(s.lrs) == epochs
    assert list(s.lrs) == pytest.approx([_hand_written_lr(epochs, e) for e in range(epochs)], rel=1e-12, abs=0)
    if epochs == 24:
        assert list(s.lrs) == pytest.approx([0.025, 0.05, 0.075] + [0.1] * 16 + [1e-3] * 3 + [1e-5] * 2, rel=1e-12)
        assert s.milestones == (19, 22) and s.drw_epoch == 19 and s.lr_at(40) == s.lrs[-1]


def test_same_initialisation_for_every_row_of_a_seed():
    ce = ablation.build_model(ROWS['ce'], 0).state_dict()
    for name in ('cosine_s16', 'camc_global', 'camc_class'):
        other = ablation.build_model(ROWS[name], 0).state_dict()
        shared = [k for k in ce if k in other and other[k].shape == ce[k].shape]
        assert 'head.fc.weight' in shared and len(shared) >= len(ce) - 1
        assert all(torch.equal(ce[k], other[k]) for k in shared), name
    seed1 = ablation.build_model(ROWS['ce'], 1).state_dict()
    assert not torch.equal(ce['conv1.weight'], seed1['conv1.weight'])


def test_rows_build_and_ldam_follows_schedule():
    schedule = ablation.Schedule.for_epochs(200)
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    loss = ablation.build_loss(ROWS['camc_global_ldam_drw'], counts, schedule).criterion
    assert loss.drw_epoch == 160 and loss.logit_scale_in == 16. and loss.scale == 30.
    assert ablation.build_loss(ROWS['ldam_drw'], counts, schedule).criterion.logit_scale_in == 1.
    names, modes = ablation.loss_modes(ablation.build_loss(ROWS['ldam_drw'], counts, schedule), 200)
    assert names == ('drw_active',) and modes == {(False,): 0, (True,): 160}
    assert ablation.loss_modes(ablation.build_loss(ROWS['la_cosine'], counts, schedule), 200) == ((), {(): 0})
    # a calibration warm-up is a loss mode too: 25 % of 200 epochs train the plain classifier alone
    warm = ablation.build_loss(ROWS['camc_global_la_warm25'], counts, schedule)
    assert warm.calib_warmup == 50
    assert ablation.loss_modes(warm, 200) == (('calibrating',), {(False,): 0, (True,): 50})
    assert {r.name for r in ablation.ROWS} >= {'ce', 'cosine_s8', 'cosine_s16', 'cosine_s32', 'camc_global',
                                               'camc_class', 'camc_global_linear', 'la_linear', 'la_cosine',
                                               'ldam_drw', 'camc_global_la', 'camc_global_ldam_drw'}


def test_plan_runs_priority():
    runs = ablation.plan_runs(list(ablation.ROWS), [0, 1])
    assert len(runs) == 2 * len(ablation.ROWS)
    keys = [r.key for r in runs]
    tier0 = [r for r in ablation.ROWS if r.tier == 0]
    assert {k for k in keys[:2 * len(tier0)]} == {f'{r.name}/s{s}' for r in tier0 for s in (0, 1)}
    assert [r.row.tier for r in runs] == sorted(r.row.tier for r in runs)


def test_fit_plan_policies():
    priority = [f'r{i}' for i in range(10)]
    reports = [dict(runs=priority[:6], epoch_s=3.), dict(runs=priority[6:], epoch_s=2.)]  # 2 + 2 = 4 epochs/s
    # every run for 200 epochs: 10 * 197 / 4 * 1.15 = 566 s
    plan = ablation.fit_plan(reports, priority, 200, 3, 600., 'auto', priority[:4])
    assert plan['epochs'] == 200 and plan['keep'] == priority and not plan['drop']
    plan = ablation.fit_plan(reports, priority, 200, 3, 300., 'rows', priority[:4])
    assert plan['epochs'] == 200 and plan['keep'] == priority[:5] and plan['predicted_s'] <= 300
    plan = ablation.fit_plan(reports, priority, 200, 3, 300., 'auto', priority[:4])  # the core fits: breadth next
    assert plan['keep'] == priority[:5]
    plan = ablation.fit_plan(reports, priority, 200, 3, 150., 'auto', priority[:4])  # it does not: shorter core
    assert plan['keep'] == priority[:4] and plan['epochs'] == 130 and plan['predicted_s'] <= 150
    plan = ablation.fit_plan(reports, priority, 200, 3, 150., 'epochs', priority[:4])
    assert plan['keep'] == priority and plan['epochs'] == 50
    plan = ablation.fit_plan(reports, priority, 200, 3, 1., 'epochs', priority[:4])
    assert plan['epochs'] == 25  # never below the warm-up-preserving minimum; the time budget stops the rest


def test_scale_labels():
    cfg = ablation.TrainConfig(epochs=200)
    full = dict(train_per_class_max=5000, test_per_class=1000, lt_seed=0)
    assert ablation.scale_label('cuda', 200, 200, full, cfg) == 'full'
    assert ablation.scale_label('cuda', 200, 150, full, cfg) == 'reduced'
    assert ablation.scale_label('cuda', 100, 100, full, cfg) == 'reduced'
    assert ablation.scale_label('cuda', 200, 200, dict(full, train_per_class_max=500), cfg) == 'reduced'
    assert ablation.scale_label('cuda', 200, 200, full, ablation.TrainConfig(epochs=200, batch_size=256)) == 'reduced'
    assert ablation.scale_label('cpu', 2, 2, dict(full, train_per_class_max=50), cfg) == 'cpu-dry-run'
    assert ablation.scale_label('cpu', 15, 15, dict(full, train_per_class_max=500), cfg) == 'cpu-reduced'
    assert ablation.scale_label('cpu', 24, 24, full, cfg) == 'cpu-short-schedule'
    assert ablation.scale_label('cpu', 24, 10, full, cfg) == 'cpu-reduced'  # stopped early
    # a --data-dir dataset with the full long-tailed profile: a short schedule of its own, never the CIFAR benchmark
    other = dict(full, num_classes=10, img_size=28)
    assert ablation.scale_label('cpu', 24, 24, other, cfg) == 'cpu-short-schedule'
    assert ablation.scale_label('cuda', 200, 200, other, cfg) == 'reduced'
    assert ablation.scale_label('cuda', 200, 200, dict(full, num_classes=100, img_size=32), cfg) == 'reduced'


def test_report_lists_paired_differences_per_seed_and_relabels_old_cpu_records():
    base = dict(scale='cpu-reduced', epochs=24, epochs_completed=24, complete=True,
                data=dict(train_per_class_max=5000, test_per_class=1000, lt_seed=0, imbalance=100))
    records = [dict(base, row='cosine_s16', seed=0, top1=50.), dict(base, row='cosine_s16', seed=1, top1=52.),
               dict(base, row='camc_global', baseline='cosine_s16', seed=0, top1=49.),
               dict(base, row='camc_global', baseline='cosine_s16', seed=1, top1=54.5)]
    text = ablation_report.render(records)
    assert 'scale: `cpu-short-schedule`' in text and 'Not the 200-epoch benchmark' in text
    assert '+0.8 ± 2.5 vs `cosine_s16` (s0 -1.00, s1 +2.50)' in text


# --- runs on the CPU --------------------------------------------------------------------------------------------------

def test_reset_restores_the_initial_state(cifar10_small, work_dir):
    meta = ablation.prepare_data(str(cifar10_small), '', work_dir, 12, 100., 0, 5)
    data = ablation.DeviceData(meta, torch.device('cpu'))
    cfg = ablation.TrainConfig(epochs=2, batch_size=16, amp='', channels_last=False, cuda_graphs=False)
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    trainer = ablation.RunTrainer(ablation.RunSpec(ROWS['camc_global'], 0, 0), data, cfg,
                                  ablation.Schedule.for_epochs(2), mean, std)
    snapshots = []
    for _ in range(2):
        trainer.begin_epoch(0)
        for step in range(2):
            trainer.train_step(step)
        snapshots.append(trainer._snapshot())
        trainer.reset()
    assert torch.equal(trainer._snapshot(), ablation.RunTrainer(
        ablation.RunSpec(ROWS['camc_global'], 0, 0), data, cfg, ablation.Schedule.for_epochs(2), mean, std)._snapshot())
    assert torch.equal(snapshots[0], snapshots[1])
    assert trainer.model.head.calib.prototypes.abs().sum() == 0  # reset empties the prototypes as well


def test_cpu_run_writes_records_and_report(cifar10_small, work_dir, tmp_path):
    out = ablation.main(_tiny_args(cifar10_small, work_dir, tmp_path, '--epochs', '1', '--rows', 'ce,camc_global'))
    path = Path(out['path'])
    assert path.name == 'ablation_cpu_dry_run.json'
    doc = json.loads(path.read_text())
    assert doc['scale'] == 'cpu-dry-run' and 'says nothing about accuracy' in doc['note']
    assert not doc['failed'] and len(doc['records']) == 2
    for rec in doc['records']:
        assert rec['scale'] == 'cpu-dry-run' and rec['complete'] and rec['epochs_completed'] == 1
        assert 0 <= rec['top1'] <= 100 and len(rec['per_class']) == 10 and rec['test_samples'] == 50
        for key in ('head', 'medium', 'tail', 'many_shot', 'medium_shot', 'few_shot', 'model_kwargs', 'loss', 'seed',
                    'wall_s', 'device_name', 'torch', 'timm', 'git_commit', 'command', 'train_loss', 'schedule'):
            assert key in rec
        counts = ablation.lt_counts(12, 10, 12)[0]
        assert rec['data']['class_counts'] == counts and rec['data']['imbalance'] == 12
        assert rec['recipe']['steps_per_epoch'] == sum(counts) // 16 == 2
    assert [r['row'] for r in doc['records']] == ['ce', 'camc_global']
    ce, camc = doc['records']
    assert ce['map_cam_corr'] is None and -1 <= camc['map_cam_corr'] <= 1  # measured for the CAMC row only
    text = ablation_report.render(ablation_report.load_records([str(path)]))
    assert '| A vs CAM |' in text and f'| {camc["map_cam_corr"]:+.2f} |' in text
    assert '`cpu-dry-run`' in text and 'CPU dry run' in text and '`camc_global`' in text
    assert 'vs `cosine_s16`' not in text  # no counterpart in this run, no paired difference
    with pytest.raises(ablation_report.NotBenchmarkError):
        ablation_report.render(doc['records'], benchmark=True)
    assert ablation_report.main([str(path), '--benchmark']) == 2


def test_time_budget_stops_and_records_progress(cifar10_small, work_dir, tmp_path, epoch_clock):
    out = ablation.main(_tiny_args(cifar10_small, work_dir, tmp_path, '--epochs', '6', '--rows', 'ce',
                                   '--time-budget', '35', '--reserve', '0'))
    (rec,) = out['records']  # epochs start at 0, 10, 20 s; one starting at 30 s would end after 35 s
    assert rec['epochs_completed'] == 3 and not rec['complete'] and rec['stop_reason'] == 'time_budget'
    assert rec['top1'] is not None and len(rec['train_loss_curve']) == rec['epochs_completed']
    table = ablation_report.render(out['records'])
    assert 'Incomplete runs' in table and 'planned 6' in table


def test_time_budget_in_worker_processes(cifar10_small, work_dir, tmp_path):
    """Two processes (spawned): a budget that is over at once still gives one evaluated record per run."""
    out = ablation.main(_tiny_args(cifar10_small, work_dir, tmp_path, '--epochs', '2', '--rows', 'ce,cosine_s16',
                                   '--procs', '2', '--time-budget', '0.001', '--reserve', '0'))
    assert not out['failed']
    assert sorted(r['row'] for r in out['records']) == ['ce', 'cosine_s16']
    assert sorted(r['process'] for r in out['records']) == [0, 1]
    for rec in out['records']:
        assert rec['epochs_completed'] == 0 and rec['stop_reason'] == 'time_budget' and rec['top1'] is not None


def test_fit_auto_drops_breadth_then_shortens_the_core(cifar10_small, work_dir, tmp_path, epoch_clock):
    """Every run-epoch takes 10 s, so 0.1 epochs/s in all. After epoch 1 (at 20 s, 280 s left) not even the tier-0
    run fits 40 epochs (39 / 0.1 x 1.15 = 449 s): the tier-2 run is dropped and the core shortened to the longest
    schedule that fits (25); the re-check after epoch 2 keeps it, and the run completes."""
    out = ablation.main(_tiny_args(cifar10_small, work_dir, tmp_path, '--epochs', '40', '--rows', 'ce,cosine_s8',
                                   '--fit', 'auto', '--calib-epochs', '1', '--time-budget', '300', '--reserve', '0'))
    first, second = out['fit']
    assert first['keep'] == ['ce/s0'] and first['drop'] == ['cosine_s8/s0'] and first['epochs'] == 25
    assert first['rate_epochs_per_s'] == pytest.approx(0.1) and first['time_left_s'] == pytest.approx(280.)
    assert second['keep'] == ['ce/s0'] and second['epochs'] == 25 and second['at_epoch'] == 2
    assert [s['run'] for s in out['skipped']] == ['cosine_s8/s0']
    (rec,) = out['records']
    assert rec['complete'] and rec['epochs'] == rec['epochs_completed'] == 25
    assert rec['schedule']['milestones'] == [20, 22] and rec['schedule']['warmup_epochs'] == 5
    assert rec['scale'] == 'cpu-dry-run'


class _EagerGraph:
    """Stands in for a captured CUDA graph on the CPU: replays the step eagerly, optionally with the learning rate
    it would have baked in at capture time (the bug the replay-vs-eager check must catch)."""

    def __init__(self, trainer, bake_lr):
        self.trainer, self.baked = trainer, trainer.lr.clone() if bake_lr else None

    def replay(self):
        t = self.trainer
        t.optimizer.zero_grad(set_to_none=True)
        current = t.lr.clone()
        if self.baked is not None:
            t.lr.copy_(self.baked)
        t._step_body()
        t.lr.copy_(current)


@pytest.mark.parametrize('bake_lr', [False, True])
def test_graph_path_modes_check_and_reset(cifar10_small, work_dir, monkeypatch, bake_lr):
    """The graph set-up on the CPU with eager stand-ins for the graphs: one graph per loss mode (LDAM before and
    after DRW), selected per epoch, the replay-vs-eager check, and the reset to the initial state."""
    monkeypatch.setattr(ablation.RunTrainer, '_capture_step', lambda self: _EagerGraph(self, bake_lr))
    meta = ablation.prepare_data(str(cifar10_small), '', work_dir, 12, 100., 0, 5)
    data = ablation.DeviceData(meta, torch.device('cpu'))
    cfg = ablation.TrainConfig(epochs=10, batch_size=16, amp='', channels_last=False, cuda_graphs=False)
    spec = ablation.RunSpec(ROWS['camc_global_ldam_drw'], 0, 0)
    schedule = ablation.Schedule.for_epochs(10)  # DRW from epoch 8
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    trainer = ablation.RunTrainer(spec, data, cfg, schedule, mean, std)
    fresh = trainer._snapshot()
    trainer._setup_graphs()
    assert torch.equal(trainer._snapshot(), fresh)  # warm-up and check leave no trace
    if bake_lr:  # the check compares a replay with an eager step at a learning rate unlike the one at capture
        assert not trainer.graph_info['check']['ok'] and not trainer.graph_info['used'] and not trainer.graphs
        return
    assert trainer.graph_info == dict(used=True, modes=2, check=dict(ok=True, rel_update_diff=0.))
    assert trainer.mode_names == ('drw_active',)
    trainer.begin_epoch(0)
    assert trainer.graph is trainer.graphs[(False,)]
    trainer.begin_epoch(8)
    assert trainer.graph is trainer.graphs[(True,)] and trainer.loss_fn.criterion.weight is not None
    trainer.train_step(0)
    assert trainer._snapshot().ne(fresh).any()


# --- any class-per-folder dataset ------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tiny_folder_dataset(tmp_path_factory) -> Path:
    """Three classes that are not CIFAR's, 40 x 40 PNGs from random arrays: 16 training and 4 test images each."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp('ant_bee_cat')
    rng = np.random.default_rng(0)
    for split, n in (('train', 16), ('test', 4)):
        for c, name in enumerate(('ant', 'bee', 'cat')):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                pixels[..., c] //= 4  # some class signal
                Image.fromarray(pixels).save(folder / f'{i}.png')
    return root


def test_any_folder_dataset_end_to_end(tiny_folder_dataset, work_dir, tmp_path):
    """The ablation on a 3-class 40 x 40 tree: classes, names and size come from the data, not from CIFAR-10."""
    out = ablation.main(['--device', 'cpu', '--data-dir', str(tiny_folder_dataset), '--work-dir', str(work_dir),
                         '--out', str(tmp_path), '--img-size', '40', '--train-per-class-max', '16', '--imbalance', '4',
                         '--test-per-class', '4', '--batch-size', '8', '--epochs', '2', '--seeds', '0',
                         '--rows', 'la_cosine,camc_global_la'])
    doc = json.loads(Path(out['path']).read_text())
    assert not doc['failed'] and [r['row'] for r in doc['records']] == ['la_cosine', 'camc_global_la']
    assert doc['data']['class_names'] == ['ant', 'bee', 'cat'] and doc['data']['num_classes'] == 3
    for rec in doc['records']:
        data = rec['data']
        assert data['num_classes'] == 3 and data['class_names'] == ['ant', 'bee', 'cat']
        assert data['img_size'] == 40 and data['dataset'] == tiny_folder_dataset.name
        assert data['class_counts'] == [16, 8, 4] and rec['recipe']['steps_per_epoch'] == 28 // 8
        assert rec['model'] == 'resnet32_camc_lt' and 'random crop 40' in rec['recipe']['augmentation']
        assert rec['complete'] and rec['epochs_completed'] == 2 and rec['scale'] == 'cpu-dry-run'
        assert 0 <= rec['top1'] <= 100 and len(rec['per_class']) == 3 and rec['test_samples'] == 12
        assert rec['head'] is None  # head / medium / tail are CIFAR-10's 3 / 4 / 3 split: none for 3 classes
        for key in ('top5', 'many_shot', 'medium_shot', 'few_shot', 'shot_group_sizes'):
            assert key in rec
        # the default model's pretrained cfg is CIFAR-10's (as the archive's): the same normalisation as before
        assert rec['normalization']['mean'] == [0.4914, 0.4822, 0.4465]
    assert -1 <= doc['records'][1]['map_cam_corr'] <= 1
    text = ablation_report.render(doc['records'])
    assert f'{tiny_folder_dataset.name} (long-tailed)' in text and 'ResNet-32 at 40 x 40' in text


def test_folder_images_are_resized_to_img_size(tiny_folder_dataset, tmp_path):
    """--img-size 32 decodes the 40 x 40 images at 32 x 32 (where the archive's 32 x 32 JPEGs pass unresized)."""
    import numpy as np

    meta = ablation.prepare_data(str(tiny_folder_dataset), '', tmp_path, 16, 4., 0, 4, img_size=32)
    train, test = np.load(meta['paths']['train_x']), np.load(meta['paths']['test_x'])
    assert train.shape == (28, 32, 32, 3) and test.shape == (12, 32, 32, 3) and meta['img_size'] == 32
    data = ablation.DeviceData(meta, torch.device('cpu'))
    assert data.num_classes == 3 and data.img_size == 32


def test_normalization_from_the_model_except_for_the_cifar_archive():
    from camc_ablation.data import normalization

    cifar = dict(mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.2435, 0.2616])
    assert {k: normalization('resnet50_camc_lt', cifar=True)[k] for k in cifar} == cifar
    imagenet = normalization('resnet50_camc_lt', cifar=False)
    assert imagenet['mean'] == pytest.approx([0.485, 0.456, 0.406])
    assert imagenet['std'] == pytest.approx([0.229, 0.224, 0.225])
    assert {k: normalization('resnet32_camc_lt', cifar=False)[k] for k in cifar} == cifar
    with pytest.raises(SystemExit):
        ablation.main(['--model', 'resnet32', '--device', 'cpu'])  # not a CAMC model: the rows' head options


def test_report_merges_a_repeated_run_and_refuses_a_disagreeing_one(tmp_path):
    """A (row, seed) run repeated in a second result file is one measurement when its results agree (the ablation is
    deterministic on one machine); one that disagrees cannot be merged into a cell."""
    path = BENCHMARKS / 'results' / 'ablation_cpu_issue12_screen_e24.json'
    records = ablation_report.load_records([str(path)])
    repeat = [dict(r, git_commit='abc1234') for r in records if r['row'] == 'la_cosine']
    merged = ablation_report.render(records + repeat)
    assert merged == ablation_report.render(records)
    assert '| 0,1 |' in merged and '0,0' not in merged
    other = dict(repeat[0], top1=repeat[0]['top1'] + 0.01)
    with pytest.raises(ValueError, match='la_cosine seed 0 was run twice with different results'):
        ablation_report.render(records + [other])
    two_files = tmp_path / 'repeat.json'
    two_files.write_text(json.dumps(dict(records=[dict(r, git_commit='abc1234') for r in records[:1]])))
    text = ablation_report.render(ablation_report.load_records([str(two_files), str(path)]))
    assert 'commits abc1234, ' in text
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(records=[other])))
    assert ablation_report.main([str(path), str(bad)]) == 2
