"""The CAMC head against a per-image, per-class reference implementation, plus its numerics and training state."""

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from timm_camc import CamcLoss
from timm_camc.layers import CamcHead, CamcOutput, NormedLinear

B, C, H, W, K = 3, 8, 4, 4, 5


def _head(camc='global', norm_classifier=True, num_classes=K, channels=C, dtype=torch.float64, seed=0, topk=32,
          **kwargs):
    torch.manual_seed(seed)
    head = CamcHead(channels, num_classes, camc=camc, norm_classifier=norm_classifier, cosine_scale=16.,
                    camc_topk=topk, dtype=dtype, **kwargs)
    if head.calib is not None:  # leave the zero init so the reference checks a non-trivial map
        nn.init.normal_(head.calib.conv.weight, std=0.5)
        nn.init.normal_(head.calib.conv.bias, std=0.5)
        head.calib.prototypes.copy_(torch.randn(num_classes, channels, dtype=dtype))
    return head


def _reference_logits(head, x, log_prior=None, directions=None):
    """CAMC.md formulas written out per image and per class, materialising every pooled feature.

    ``log_prior``: the logit adjustment of the prediction behind the global maps (balanced q); ``directions``: per
    image, the direction of the prototype map in place of the expected prototype (None in a row: the prototypes).
    """
    fc, calib = head.fc, head.calib
    normed = isinstance(fc, NormedLinear)
    weight = F.normalize(fc.weight, dim=1) if normed else fc.weight

    def score(k, g):
        return fc.scale * weight[k] @ g / g.norm() if normed else weight[k] @ g + fc.bias[k]

    def pool_weights(m, r):
        m = (m - m.mean()) / (m.std(correction=0) + 1e-5)
        maps = torch.stack([m, r]).reshape(1, 2, H, W)
        a = 1 + torch.sigmoid(F.conv2d(maps, calib.conv.weight, calib.conv.bias, padding=1)).flatten()
        return a / a.sum()

    protos = F.normalize(calib.prototypes, dim=1)
    out = torch.zeros(x.shape[0], weight.shape[0], dtype=x.dtype)
    for b in range(x.shape[0]):
        feat = x[b].reshape(C, H * W)
        feat_hat = F.normalize(feat, dim=0)
        mean = feat.mean(1)
        plain = torch.stack([score(k, mean) for k in range(weight.shape[0])])
        if head.camc in ('global', 'batch'):
            q = (plain if log_prior is None else plain - log_prior).softmax(0)
            if 0 < calib.topk < len(q):  # only the topk most probable classes, renormalised
                q = torch.where(q >= q.topk(calib.topk).values[-1], q, torch.zeros_like(q))
                q = q / q.sum()
            m = sum(q[k] * weight[k] @ feat for k in range(weight.shape[0]))
            r = sum(q[k] * protos[k] @ feat_hat for k in range(weight.shape[0]))
            if directions is not None and directions[b] is not None:
                r = directions[b] @ feat_hat
            g = feat @ pool_weights(m, r)
            out[b] = torch.stack([score(k, g) for k in range(weight.shape[0])])
        else:
            for k in range(weight.shape[0]):
                g_k = feat @ pool_weights(weight[k] @ feat, protos[k] @ feat_hat)
                out[b, k] = score(k, g_k)
    return out


@pytest.mark.parametrize('camc, topk', [('global', 0), ('global', 2), ('class', 0)])
@pytest.mark.parametrize('norm_classifier', [True, False])
def test_head_matches_reference(camc, topk, norm_classifier):
    head = _head(camc, norm_classifier, topk=topk).eval()
    x = torch.rand(B, C, H, W, dtype=torch.float64)
    torch.testing.assert_close(head(x), _reference_logits(head, x))


@pytest.mark.parametrize('camc', ['global', 'class'])
def test_zero_init_head_equals_plain_cosine_classifier(camc):
    torch.manual_seed(0)
    head = CamcHead(C, K, camc=camc, dtype=torch.float64)
    head.calib.prototypes.normal_()
    x = torch.rand(B, C, H, W, dtype=torch.float64)
    plain = 16. * F.normalize(x.mean((2, 3)), dim=1) @ F.normalize(head.fc.weight, dim=1).t()
    torch.testing.assert_close(head(x), plain)


def test_normed_linear_init_matches_linear():
    torch.manual_seed(0)
    normed = NormedLinear(256, 100)
    torch.manual_seed(0)
    linear = nn.Linear(256, 100)
    torch.testing.assert_close(normed.weight, linear.weight)


def test_pre_logits():
    head = _head('global').eval()
    x = torch.rand(B, C, H, W, dtype=torch.float64)
    g = head(x, pre_logits=True)
    expected = 16. * F.normalize(g, dim=1) @ F.normalize(head.fc.weight, dim=1).t()
    torch.testing.assert_close(head(x), expected)  # the classifier scores exactly the returned pre-logits
    torch.testing.assert_close(_head('class')(x, pre_logits=True), x.mean((2, 3)))
    torch.testing.assert_close(_head('none')(x, pre_logits=True), x.mean((2, 3)))


@pytest.mark.parametrize('camc', ['class', 'none'])
def test_pre_logits_follow_pool_type(camc):
    """Pre-logits are the head's pooled feature, whatever the pooling ('class' used to average regardless)."""
    x = torch.rand(B, C, H, W, dtype=torch.float64)
    head = CamcHead(C, K, pool_type='max', camc=camc, dtype=torch.float64).eval()
    torch.testing.assert_close(head(x, pre_logits=True), x.amax((2, 3)))


class _CountClassifierProducts(TorchDispatchMode):
    """Counts matrix products with a K x C classifier operand whose output has K columns (the plain logits)."""

    def __init__(self, classes):
        super().__init__()
        self.classes, self.count = classes, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm) \
                and out.shape[-1] == self.classes:
            self.count += 1
        return out


def test_class_calibration_skips_unused_plain_logits():
    """'class' never reads the detached plain prediction: no B x K x C product for it, neither in forward nor in
    pre_logits (which needs no classifier product at all). 'global' needs it to weight its maps."""
    x = torch.rand(B, C, H, W, dtype=torch.float64)
    head = _head('class').eval()
    with _CountClassifierProducts(K) as rec:
        head(x, pre_logits=True)
    assert rec.count == 0
    with _CountClassifierProducts(K) as rec:
        head(x)
    assert rec.count == 1  # the plain logits (auxiliary loss); the calibrated ones come from the class maps
    with _CountClassifierProducts(K) as rec:
        _head('global').eval()(x, pre_logits=True)
    assert rec.count == 1


@pytest.mark.parametrize('camc, kwargs', [('global', {}), ('class', {}), ('batch', {}),
                                          ('global', dict(balanced_q=True))])
def test_head_scripts(camc, kwargs):
    head = _head(camc, **kwargs).eval()
    x = torch.rand(B, C, H, W, dtype=torch.float64)
    scripted = torch.jit.script(head)
    torch.testing.assert_close(scripted(x), head(x))
    torch.testing.assert_close(scripted(x, pre_logits=True), head(x, pre_logits=True))


def test_label_check_runs_on_the_device_without_a_host_sync(monkeypatch):
    """Off the CPU, labels are checked by torch._assert_async (no bool() of a device tensor per step); on the meta
    device, where any host read raises, forward_train runs."""
    calls = []
    real = torch._assert_async
    monkeypatch.setattr(torch, '_assert_async', lambda *a: calls.append(a) or real(*a))
    head = CamcHead(C, K, dtype=torch.float32, device='meta').train()
    out = head.forward_train(torch.rand(B, C, H, W, device='meta'), torch.zeros(B, dtype=torch.long, device='meta'))
    assert out.logits.shape == (B, K) and len(calls) == 1
    if torch.cuda.is_available():
        head = _head('global', dtype=torch.float32).cuda().train()
        target = torch.tensor([0, 1, 2], device='cuda')
        torch.cuda.set_sync_debug_mode('error')  # a host sync raises
        try:
            head.forward_train(torch.rand(B, C, H, W, device='cuda'), target)
        finally:
            torch.cuda.set_sync_debug_mode('default')
        assert calls


class _RecordSizes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize('camc', ['global', 'class'])
def test_never_materialises_batch_by_classes_by_channels(camc):
    batch, classes, channels, size = 4, 50, 64, 4  # B*K*C = 12800 > any legitimate tensor (B*C*N = 4096)
    head = _head(camc, num_classes=classes, channels=channels, dtype=torch.float32).train()
    x = torch.rand(batch, channels, size, size, requires_grad=True)
    target = torch.randint(0, classes, (batch,))
    with _RecordSizes() as rec:
        out = head.forward_train(x, target)
        CamcLoss(nn.CrossEntropyLoss())(out, target).backward()
    assert rec.largest < batch * classes * channels


@pytest.mark.parametrize('camc', ['global', 'class'])
def test_channels_last_and_autocast(camc):
    head = _head(camc, dtype=torch.float32).eval()
    x = torch.rand(B, C, H, W)
    ref = head(x)
    torch.testing.assert_close(head(x.contiguous(memory_format=torch.channels_last)), ref)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = head(x.to(torch.bfloat16))
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=0.25, rtol=0.05)


def test_half_precision_large_activations_stay_finite():
    head = _head('global', dtype=torch.float16).eval()
    x = (torch.rand(B, C, H, W) * 300).half()  # squares overflow float16
    out = head(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), head.float()(x.float()), atol=0.1, rtol=0.02)


@pytest.mark.parametrize('camc', ['global', 'class'])
def test_compiles_without_graph_breaks(camc):
    head = _head(camc, dtype=torch.float32).train()
    x, target = torch.rand(B, C, H, W), torch.tensor([0, 3, 3])
    torch._dynamo.reset()
    compiled = torch.compile(head, backend='eager', fullgraph=True)
    torch.testing.assert_close(compiled(x), head(x))
    train_step = torch.compile(head.forward_train, backend='eager', fullgraph=True)
    before = head.calib.prototypes.clone()
    out = train_step(x, target)
    assert isinstance(out, CamcOutput)
    assert not torch.equal(head.calib.prototypes, before)


def test_prototype_ema_by_hand():
    head = CamcHead(C, K, camc='global', proto_momentum=0.9, dtype=torch.float64).train()
    f = torch.rand(4, C, dtype=torch.float64)
    x = f[:, :, None, None].expand(4, C, H, W)  # pooled feature of image i is f[i]
    target = torch.tensor([0, 0, 2, 2])
    head.forward_train(x, target)
    n = F.normalize(f, dim=1)
    expected = torch.zeros(K, C, dtype=torch.float64)
    expected[0] = 0.1 * (n[0] + n[1]) / 2
    expected[2] = 0.1 * (n[2] + n[3]) / 2
    torch.testing.assert_close(head.calib.prototypes, expected)

    head.forward_train(x[:1], target[:1])
    expected[0] = 0.9 * expected[0] + 0.1 * n[0]
    torch.testing.assert_close(head.calib.prototypes, expected)

    head(x)  # no labels: no update
    torch.testing.assert_close(head.calib.prototypes, expected)


def test_head_without_calibration_returns_plain_output():
    head = _head('none').train()
    x = torch.rand(B, C, H, W, dtype=torch.float64)
    out = head.forward_train(x, torch.tensor([0, 1, 2]))
    assert out.aux_logits is None and out.aux_weight == 0.
    torch.testing.assert_close(out.logits, head(x))


def test_camc_loss():
    torch.manual_seed(0)
    z, l, y = torch.randn(6, K), torch.randn(6, K), torch.randint(0, K, (6,))
    loss = CamcLoss(nn.CrossEntropyLoss())
    torch.testing.assert_close(loss(CamcOutput(z, l, 0.5), y), F.cross_entropy(z, y) + 0.5 * F.cross_entropy(l, y))
    torch.testing.assert_close(loss(CamcOutput(z, None, 0.), y), F.cross_entropy(z, y))
    torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y))


@pytest.mark.parametrize('camc', ['global', 'target'])
def test_calibration_warmup_trains_the_plain_classifier_alone(camc):
    """During the warm-up the loss is (1 + w) L(plain) and the map conv gets a zero gradient (it stays flat, where the
    calibrated logits equal the plain ones); from the warm-up's last epoch on, the calibration trains."""
    torch.manual_seed(0)
    head = CamcHead(C, K, camc=camc, dtype=torch.float64).train()
    x, y = torch.randn(B, C, H, W, dtype=torch.float64), torch.tensor([0, 3, 3])
    loss = CamcLoss(nn.CrossEntropyLoss(), calib_warmup=2)
    for epoch, calibrating in [(0, False), (1, False), (2, True), (5, True)]:
        loss.set_epoch(epoch)
        head.zero_grad()
        out = head.forward_train(x, y)
        value = loss(out, y)
        value.backward()
        phi_grad = head.calib.conv.weight.grad.abs().sum()
        if calibrating:
            full = F.cross_entropy(out.logits, y) + 0.5 * F.cross_entropy(out.aux_logits, y)
            torch.testing.assert_close(value, full)
            assert phi_grad > 0
        else:
            torch.testing.assert_close(value, 1.5 * F.cross_entropy(out.plain_logits, y))
            assert phi_grad == 0 and head.fc.weight.grad.abs().sum() > 0
            # the map conv is still at its zero start: calibrated and plain logits agree
            torch.testing.assert_close(out.logits, out.aux_logits)
    with pytest.raises(ValueError, match='calib_warmup'):
        CamcLoss(nn.CrossEntropyLoss(), calib_warmup=-1)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_classes=-1), 'num_classes'),
    (dict(camc='D'), 'camc mode'),
    (dict(pool_type=''), 'Pooling can only be disabled'),
    (dict(pool_type='catavgmax'), 'keeps the channel count'),
    (dict(cosine_scale=0.), 'scale'),
    (dict(proto_momentum=1.), 'momentum'),
    (dict(aux_weight=-1.), 'aux_weight'),
    (dict(camc='class', balanced_q=True), 'balanced_q'),
    (dict(camc='target', balanced_q=True), 'balanced_q'),
])
def test_bad_head_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CamcHead(C, **dict(dict(num_classes=K), **kwargs))


def _ddp_worker(rank, world_size, init_file, x, target, out_path):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    head = _head('global', dtype=torch.float64).train()
    shard = slice(rank * 2, rank * 2 + 2)
    head.forward_train(x[shard], target[shard])
    if rank == 0:
        torch.save(head.calib.prototypes, out_path)
    dist.destroy_process_group()


def test_prototypes_are_reduced_across_ddp_ranks(tmp_path):
    torch.manual_seed(1)
    x = torch.rand(4, C, H, W, dtype=torch.float64)
    target = torch.tensor([1, 3, 1, 4])  # class 3 only on rank 0, class 4 only on rank 1
    out_path = tmp_path / 'protos.pt'
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / 'init'), x, target, str(out_path)), nprocs=2)
    single = _head('global', dtype=torch.float64).train()
    single.forward_train(x, target)
    torch.testing.assert_close(torch.load(out_path), single.calib.prototypes)


@pytest.mark.parametrize('camc', ['global', 'class', 'none'])
def test_explain_returns_the_maps_behind_the_logits(camc):
    head = _head(camc).eval()
    x = torch.rand(B, C, H, W, dtype=torch.float64)
    out = head.explain(x)
    torch.testing.assert_close(out['logits'], head(x))
    assert torch.equal(out['classes'], head(x).argmax(-1))
    w = F.normalize(head.fc.weight, dim=1) if isinstance(head.fc, NormedLinear) else head.fc.weight
    cam = torch.einsum('bc,bchw->bhw', w[out['classes']], x)
    torch.testing.assert_close(out['cam'], cam)
    if camc == 'none':
        assert 'calibration' not in out
        return
    A = out['calibration']
    assert A.shape == (B, H, W) and ((A > 0) & (A < 1)).all()
    # pooling with (1 + A) / sum(1 + A) reproduces the calibrated logits of each image's class
    a = (1 + A).flatten(1)
    g = torch.einsum('bcn,bn->bc', x.flatten(2), a / a.sum(1, keepdim=True))
    expected = 16. * (F.normalize(g, dim=1) * w[out['classes']]).sum(1)
    torch.testing.assert_close(expected, out['logits'].gather(1, out['classes'][:, None]).squeeze(1))


def test_target_calibration_trains_on_the_label_map_and_infers_plain():
    """Variant C: in training the calibrated feature of the label's map takes the auxiliary loss and the plain logits
    the main one; without labels (inference) the head is exactly its plain cosine classifier."""
    torch.manual_seed(0)
    head = CamcHead(C, K, camc='target', dtype=torch.float64)
    plain = CamcHead(C, K, camc='none', dtype=torch.float64)
    plain.load_state_dict(head.state_dict(), strict=False)
    nn.init.normal_(head.calib.conv.weight, std=0.5)
    x, y = torch.randn(B, C, H, W, dtype=torch.float64), torch.tensor([0, 3, 3])
    torch.testing.assert_close(head.eval()(x), plain.eval()(x))

    # the aux logits are the global calibration weighted by the one-hot label (prototypes as before the update)
    glob = CamcHead(C, K, camc='global', camc_topk=0, dtype=torch.float64)
    glob.load_state_dict(head.state_dict())
    head.train()
    out = head.forward_train(x, y)
    torch.testing.assert_close(out.logits, plain(x))  # the prediction stays plain
    assert out.aux_logits is not None and not torch.allclose(out.aux_logits, out.logits)
    q = F.one_hot(y, K).double()
    proj_plain, sq_plain, proj, sq = glob.calib(x, glob.global_pool(x), glob.fc.weight, glob.fc.row_scale(), q)
    torch.testing.assert_close(out.aux_logits, glob.fc.logits_from_projection(proj, sq, glob.fc.row_scale()))
    CamcLoss(nn.CrossEntropyLoss())(out, y).backward()
    assert head.calib.conv.weight.grad.abs().sum() > 0  # the map conv learns from the auxiliary loss


def test_nonneg_map_uses_the_magnitude_of_the_conv_weights():
    torch.manual_seed(0)
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    free = CamcHead(C, K, camc='global', dtype=torch.float64).eval()
    nonneg = CamcHead(C, K, camc='global', nonneg_map=True, dtype=torch.float64).eval()
    assert (nonneg.calib.conv.weight == 1e-4).all()  # near-flat start that still has a gradient
    nonneg.load_state_dict(free.state_dict())
    weight = -torch.rand_like(free.calib.conv.weight)  # all negative: the free map is the opposite of the class map
    nonneg.calib.conv.weight.data.copy_(weight)
    free.calib.conv.weight.data.copy_(weight.abs())
    torch.testing.assert_close(nonneg(x), free(x))
    torch.testing.assert_close(nonneg.explain(x)['calibration'], free.explain(x)['calibration'])


def test_batch_calibration_correlates_with_classmates_in_training():
    """Variant D: in training, an image's prototype map follows the mean normalised pooled feature of the other images
    of its class in the batch, with gradient into those images; an image without a classmate, and inference, use
    the prototypes exactly as 'global' does."""
    batch, glob = _head('batch', topk=0), _head('global', topk=0)
    for name, tensor in glob.state_dict().items():
        torch.testing.assert_close(batch.state_dict()[name], tensor)
    x = torch.randn(5, C, H, W, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 1, 1, 2])  # images 0 and 4 have no classmate
    torch.testing.assert_close(batch.eval()(x), glob.eval()(x))
    torch.testing.assert_close(batch(x), _reference_logits(batch, x))

    unit = F.normalize(x.mean((2, 3)), dim=1).detach()
    directions = [None, (unit[2] + unit[3]) / 2, (unit[1] + unit[3]) / 2, (unit[1] + unit[2]) / 2, None]
    expected = _reference_logits(batch, x.detach(), directions=directions)  # prototypes before this step's update
    logits = batch.train().forward_train(x, y).logits
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(logits[[0, 4]], glob.train().forward_train(x, y).logits[[0, 4]])

    # the classmates' features take part: image 1's calibrated logits have a gradient into image 2, not into 4
    grad, = torch.autograd.grad(logits[1].sum(), x)
    assert grad[2].abs().sum() > 0 and grad[4].abs().sum() == 0


def test_balanced_q_weights_the_maps_by_the_logit_adjusted_prediction():
    head = _head('global', topk=0, balanced_q=True)
    assert 'calib.label_counts' in head.state_dict() and 'calib.label_counts' not in _head('global').state_dict()
    x = torch.randn(4, C, H, W, dtype=torch.float64)
    torch.testing.assert_close(head.eval()(x), _reference_logits(head, x))  # no labels seen yet: uniform prior

    head.train().forward_train(x, torch.tensor([0, 0, 0, 2]))
    head.train().forward_train(x[:2], torch.tensor([0, 1]))
    counts = torch.tensor([4., 1., 1., 0., 0.], dtype=torch.float64)
    torch.testing.assert_close(head.calib.label_counts, counts)  # float64 head: float64 counts
    clamped = counts.clamp_min(1.)
    torch.testing.assert_close(head.eval()(x), _reference_logits(head, x, log_prior=(clamped / clamped.sum()).log()))
    assert not torch.allclose(head(x), _reference_logits(head, x))

    restored = _head('global', topk=0, balanced_q=True, seed=1)
    restored.load_state_dict(head.state_dict())
    torch.testing.assert_close(restored.eval()(x), head(x))

