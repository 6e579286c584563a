"""Long-tail evaluation metrics: confusion matrix, per-class / group accuracy, top-5, DDP sync, bad inputs."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from timm_camc.metrics import LongTailMetrics, accuracy_by_group, confusion_matrix, default_class_groups


def _one_hot_logits(preds, num_classes):
    return F.one_hot(torch.as_tensor(preds), num_classes).float() * 5.


def test_confusion_matrix_known():
    preds = torch.tensor([0, 1, 1, 2, 2, 2, 0])
    targets = torch.tensor([0, 0, 1, 2, 2, 1, 2])
    expected = torch.tensor([
        [1, 1, 0],  # true 0: one right, one predicted as 1
        [0, 1, 1],  # true 1: one right, one predicted as 2
        [1, 0, 2],  # true 2: two right, one predicted as 0
    ])
    cm = confusion_matrix(preds, targets, 3)
    assert cm.dtype == torch.long
    assert torch.equal(cm, expected)


def test_per_class_and_shot_groups():
    train_counts = [500, 150, 100, 50, 20, 5]  # many: 0, 1 (> 100); medium: 2, 3, 4 (20..100); few: 5 (< 20)
    targets = [0, 0, 1, 1, 2, 2, 2, 2, 3, 5, 5]  # class 4 has no test sample
    preds = [0, 0, 1, 0, 2, 0, 0, 1, 1, 5, 4]
    metrics = LongTailMetrics(6, train_counts=train_counts)
    for sl in (slice(0, 4), slice(4, 11)):  # two batches
        metrics.update(_one_hot_logits(preds[sl], 6), torch.tensor(targets[sl]))
    out = metrics.compute()
    assert out['num_samples'] == 11
    assert out['top1'] == pytest.approx(100. * 5 / 11)
    assert out['per_class'] == pytest.approx([100., 50., 25., 0., None, 50.])
    assert out['many_shot'] == pytest.approx((100. + 50.) / 2)
    assert out['medium_shot'] == pytest.approx((25. + 0.) / 2)  # class 4 has no test samples and is skipped
    assert out['few_shot'] == pytest.approx(50.)
    assert out['shot_group_sizes'] == {'many_shot': 2, 'medium_shot': 3, 'few_shot': 1}
    assert out['many_thresh'] == 100 and out['few_thresh'] == 20
    assert 'class_groups' not in out

    metrics.reset()
    out = metrics.compute()
    assert out['num_samples'] == 0 and out['top1'] is None and out['many_shot'] is None
    assert out['per_class'] == [None] * 6


def test_top5():
    scores = torch.tensor([[6., 5., 4., 3., 2., 1., 0.]]).repeat(4, 1)  # class k has rank k + 1
    targets = torch.tensor([0, 4, 5, 6])  # rank 1 (top-1), rank 5 (top-5), ranks 6 and 7 (misses)
    metrics = LongTailMetrics(7)
    metrics.update(scores, targets)
    out = metrics.compute()
    assert out['top1'] == pytest.approx(25.)
    assert out['top5'] == pytest.approx(50.)
    assert 'many_shot' not in out and 'shot_group_sizes' not in out

    small = LongTailMetrics(4)
    small.update(_one_hot_logits([0, 1], 4), torch.tensor([0, 2]))
    out = small.compute()
    assert out['top5'] is None and out['top1'] == pytest.approx(50.)


def test_default_class_groups_come_from_the_training_counts():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT, imbalance 100
    assert default_class_groups(10, counts) == {'head': [0, 1, 2], 'medium': [3, 4, 5, 6], 'tail': [7, 8, 9]}
    # by training frequency, not by class index: a shuffled long-tailed 10-class set gets its own groups
    shuffled = [counts[i] for i in (9, 0, 5, 1, 8, 2, 7, 3, 6, 4)]
    assert default_class_groups(10, shuffled) == {'head': [1, 3, 5], 'medium': [2, 7, 8, 9], 'tail': [0, 4, 6]}
    # no customary grouping: unknown counts, a balanced 10-class dataset, other class counts
    assert default_class_groups(10) is None
    assert default_class_groups(10, [500] * 10) is None
    assert default_class_groups(100, list(range(100, 0, -1))) is None and default_class_groups(1000) is None


def test_cifar10_head_medium_tail():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT, imbalance 100
    groups = default_class_groups(10, counts)

    # 4 test samples per class, of which correct_per_class[k] are right (the others predicted as k + 1)
    correct_per_class = [4, 4, 2, 3, 1, 2, 2, 0, 1, 1]
    targets, preds = [], []
    for k, n_ok in enumerate(correct_per_class):
        targets += [k] * 4
        preds += [k] * n_ok + [(k + 1) % 10] * (4 - n_ok)
    metrics = LongTailMetrics(10, train_counts=counts, class_groups=groups)
    metrics.update(_one_hot_logits(preds, 10), torch.tensor(targets))
    out = metrics.compute()
    acc = [25. * n for n in correct_per_class]
    assert out['per_class'] == pytest.approx(acc)
    assert out['class_groups'] == pytest.approx({
        'head': (100. + 100. + 50.) / 3, 'medium': (75. + 25. + 50. + 50.) / 4, 'tail': (0. + 25. + 25.) / 3})
    assert out['class_group_sizes'] == {'head': 3, 'medium': 4, 'tail': 3}
    # the shot groups by training count are reported alongside, under their own names: 8 many-shot, 2 medium-shot,
    # no few-shot classes. Neither grouping overwrites the other when both are flattened into one log line.
    assert out['shot_group_sizes'] == {'many_shot': 8, 'medium_shot': 2, 'few_shot': 0}
    assert out['few_shot'] is None
    assert out['medium_shot'] == pytest.approx((25. + 25.) / 2)
    assert not set(out['class_groups']) & set(out) and not set(out['class_groups']) & set(out['shot_group_sizes'])
    assert out['top1'] == pytest.approx(100. * sum(correct_per_class) / 40)


def test_accuracy_by_group():
    per_class = [100., None, 50., 0.]
    assert accuracy_by_group(per_class, {'a': [0, 1], 'b': [2, 3], 'c': [1], 'd': []}) == {
        'a': 100., 'b': 25., 'c': None, 'd': None}


def test_sync_without_distributed_is_noop():
    metrics = LongTailMetrics(3)
    metrics.update(_one_hot_logits([0, 1, 1], 3), torch.tensor([0, 1, 2]))
    before = metrics.compute()
    metrics.sync()
    assert metrics.compute() == before


def test_bad_inputs():
    metrics = LongTailMetrics(3)
    with pytest.raises(ValueError, match=r'out of range \[0, 3\): 3 value\(s\): -1, 3, 7'):
        metrics.update(torch.zeros(4, 3), torch.tensor([0, 3, -1, 7]))
    with pytest.raises(ValueError, match=r'\(B, 3\)'):
        metrics.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='integer'):
        metrics.update(torch.zeros(2, 3), torch.tensor([0., 1.]))
    with pytest.raises(ValueError, match='targets'):
        metrics.update(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    assert metrics.compute()['num_samples'] == 0  # nothing was accumulated by the failed calls
    with pytest.raises(ValueError, match='one entry per class'):
        LongTailMetrics(3, train_counts=[10, 20])
    with pytest.raises(ValueError, match=r"class_groups\['tail'\].*\[3\]"):
        LongTailMetrics(3, class_groups={'head': [0], 'tail': [2, 3]})
    with pytest.raises(ValueError, match='few_thresh'):
        LongTailMetrics(3, many_thresh=10, few_thresh=20)
    with pytest.raises(ValueError, match='preds'):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)


def _eval_data():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(101, 10, generator=gen)
    targets = torch.randint(0, 10, (101,), generator=gen)
    return logits, targets


def _make_metrics():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 15]
    return LongTailMetrics(10, train_counts=counts, class_groups=default_class_groups(10, counts), confusion=True)


def _ddp_worker(rank, world_size, tmp_dir):
    dist.init_process_group('gloo', init_method=f'file://{tmp_dir}/init', rank=rank, world_size=world_size)
    try:
        logits, targets = _eval_data()
        shard = slice(0, 40) if rank == 0 else slice(40, None)  # uneven halves
        metrics = _make_metrics()
        for chunk_l, chunk_t in zip(logits[shard].split(16), targets[shard].split(16)):
            metrics.update(chunk_l, chunk_t)
        local = metrics.compute()
        metrics.sync()
        metrics.sync()  # a second sync must not double-count
        torch.save({'local': local, 'synced': metrics.compute(), 'confusion': metrics.confusion_matrix()},
                   f'{tmp_dir}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason='needs the gloo backend')
def test_ddp_sync_equals_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    logits, targets = _eval_data()
    single = _make_metrics()
    single.update(logits, targets)
    expected = single.compute()
    assert expected['num_samples'] == 101
    for rank, n_local in ((0, 40), (1, 61)):
        result = torch.load(tmp_path / f'rank{rank}.pt')
        assert result['local']['num_samples'] == n_local
        assert result['synced'] == expected
        assert torch.equal(result['confusion'], confusion_matrix(logits.argmax(1), targets, 10))


class _RecordSizes(TorchDispatchMode):
    """Records the largest tensor any op creates."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_update_accumulates_in_place_without_a_k_squared_tensor():
    """At iNaturalist's 8,142 classes a K x K tensor per batch is 530 MB: update() must stay O(B * K)."""
    num_classes, batch = 300, 16
    gen = torch.Generator().manual_seed(0)
    metrics = LongTailMetrics(num_classes)
    metrics.update(torch.randn(batch, num_classes, generator=gen), torch.randint(0, num_classes, (batch,)))
    counts = metrics.correct
    with _RecordSizes() as rec:
        for _ in range(3):
            metrics.update(torch.randn(batch, num_classes, generator=gen),
                           torch.randint(0, num_classes, (batch,), generator=gen))
    assert rec.largest <= batch * num_classes < num_classes ** 2
    assert metrics.correct.data_ptr() == counts.data_ptr()  # the same buffer, updated in place
    assert metrics.compute()['num_samples'] == 4 * batch
    with pytest.raises(RuntimeError, match='confusion=True'):
        metrics.confusion_matrix()


def test_update_never_waits_for_the_device():
    """update() reads nothing back to the host: it runs on the meta device, where any such read raises."""
    metrics = LongTailMetrics(10, confusion=True, device='meta')
    metrics.update(torch.randn(4, 10, device='meta'), torch.zeros(4, dtype=torch.long, device='meta'))
    assert metrics.correct.device.type == 'meta'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_update_on_cuda_checks_labels_on_the_device():
    metrics = LongTailMetrics(10, device='cuda')
    logits, targets = torch.randn(4, 10, device='cuda'), torch.tensor([0, 1, 2, 9], device='cuda')
    metrics.update(logits, targets)
    assert metrics.compute()['num_samples'] == 4
    torch.cuda.set_sync_debug_mode('error')  # any host sync in update() raises
    try:
        metrics.update(logits, targets)
    finally:
        torch.cuda.set_sync_debug_mode('default')


def test_confusion_matrix_on_request_matches_the_counts():
    logits, targets = _eval_data()
    metrics = LongTailMetrics(10, confusion=True)
    for chunk_l, chunk_t in zip(logits.split(16), targets.split(16)):
        metrics.update(chunk_l, chunk_t)
    cm = metrics.confusion_matrix()
    assert torch.equal(cm, confusion_matrix(logits.argmax(1), targets, 10))
    out = metrics.compute()
    assert 'confusion_matrix' not in out  # K x K nested lists would cost gigabytes at large K
    assert out['per_class'] == pytest.approx([100. * d / n for d, n in zip(cm.diagonal().tolist(), cm.sum(1).tolist())])
