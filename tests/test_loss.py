"""Long-tail losses against hand calculations: logit adjustment, LDAM(-DRW), class-balanced CE, the factory."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from timm_camc.layers import CamcOutput
from timm_camc.loss import (
    CamcLoss, ClassBalancedCrossEntropy, CrossEntropy, LDAMLoss, LogitAdjustedLoss, create_loss,
    effective_number_weights,
)

COUNTS = [100, 10, 1]
LOGITS = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
TARGETS = [0, 2]


def _logits(scale=1.0):
    return torch.tensor(LOGITS, dtype=torch.float64) * scale


def _targets():
    return torch.tensor(TARGETS)


def _ce(row, target):
    """-log softmax(row)[target] for a list of floats."""
    return math.log(sum(math.exp(v) for v in row)) - row[target]


def _cb_weights(beta):
    raw = [(1 - beta) / (1 - beta ** n) for n in COUNTS]
    return [w * len(raw) / sum(raw) for w in raw]


def _ldam_rows(rows, scale, max_margin=0.5):
    margins = [max_margin * (min(COUNTS) / n) ** 0.25 for n in COUNTS]  # n ** -1/4, largest = max_margin
    out = []
    for row, t in zip(rows, TARGETS):
        row = list(row)
        row[t] -= margins[t]
        out.append([scale * v for v in row])
    return out


def test_logit_adjusted_matches_hand_calculation():
    prior = [n / sum(COUNTS) for n in COUNTS]
    for tau in (1.0, 0.5):
        rows = [[v + tau * math.log(p) for v, p in zip(row, prior)] for row in LOGITS]
        expected = (_ce(rows[0], 0) + _ce(rows[1], 2)) / 2
        loss = LogitAdjustedLoss(COUNTS, tau=tau)(_logits(), _targets())
        assert loss.item() == pytest.approx(expected, rel=1e-6)
    # tau = 0 is plain cross-entropy
    plain = LogitAdjustedLoss(COUNTS, tau=0.)(_logits(), _targets())
    torch.testing.assert_close(plain, nn.functional.cross_entropy(_logits(), _targets()))


def test_logit_adjusted_soft_targets():
    loss_fn = LogitAdjustedLoss(COUNTS, tau=1.)
    one_hot = nn.functional.one_hot(_targets(), 3).double()
    torch.testing.assert_close(loss_fn(_logits(), one_hot), loss_fn(_logits(), _targets()))

    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.2, 0.8]], dtype=torch.float64)
    prior = [n / sum(COUNTS) for n in COUNTS]
    rows = [[v + math.log(p) for v, p in zip(row, prior)] for row in LOGITS]
    expected = sum(
        sum(y * _ce(row, k) for k, y in enumerate(ys)) for row, ys in zip(rows, soft.tolist())) / 2
    assert loss_fn(_logits(), soft).item() == pytest.approx(expected, rel=1e-6)


def test_ldam_before_and_after_drw():
    s_in, scale, beta = 16.0, 30.0, 0.9
    loss_fn = LDAMLoss(COUNTS, max_margin=0.5, scale=scale, drw_epoch=2, beta=beta, logit_scale_in=s_in)
    torch.testing.assert_close(
        loss_fn.margins, torch.tensor([0.5 * 0.01 ** 0.25, 0.5 * 0.1 ** 0.25, 0.5]), rtol=1e-6, atol=0)
    logits = _logits(s_in)  # what a cosine classifier with s = 16 outputs for the cosines LOGITS
    rows = _ldam_rows(LOGITS, scale)
    ce = [_ce(rows[0], 0), _ce(rows[1], 2)]

    for epoch in (0, 1):
        loss_fn.set_epoch(epoch)
        assert loss_fn.weight is None
        assert loss_fn(logits, _targets()).item() == pytest.approx(sum(ce) / 2, rel=1e-6)

    w = _cb_weights(beta)
    expected_drw = (w[0] * ce[0] + w[2] * ce[1]) / (w[0] + w[2])
    for epoch in (2, 5):
        loss_fn.set_epoch(epoch)
        torch.testing.assert_close(loss_fn.weight, torch.tensor(w, dtype=torch.float32))
        assert loss_fn(logits, _targets()).item() == pytest.approx(expected_drw, rel=1e-6)
    assert expected_drw != pytest.approx(sum(ce) / 2)  # the weights really change the loss

    loss_fn.set_epoch(1)  # going back (e.g. a re-run) switches re-weighting off again
    assert loss_fn.weight is None
    never = LDAMLoss(COUNTS, drw_epoch=None)
    never.set_epoch(1000)
    assert never.weight is None


def test_ldam_soft_targets():
    loss_fn = LDAMLoss(COUNTS, scale=30., drw_epoch=1, beta=0.9)
    one_hot = nn.functional.one_hot(_targets(), 3).double()
    for epoch in (0, 1):
        loss_fn.set_epoch(epoch)
        torch.testing.assert_close(loss_fn(_logits(), one_hot), loss_fn(_logits(), _targets()))

    # mixed targets: every logit k is lowered by margin_k * y_k, then weighted soft cross-entropy
    soft = [[0.6, 0.4, 0.0], [0.0, 0.5, 0.5]]
    margins = [0.5 * (1 / n) ** 0.25 for n in COUNTS]
    rows = [[30. * (v - m * y) for v, m, y in zip(row, margins, ys)] for row, ys in zip(LOGITS, soft)]
    ce = [[_ce(row, k) for k in range(3)] for row in rows]
    w = _cb_weights(0.9)
    num = sum(w[k] * ys[k] * ce_i[k] for ys, ce_i in zip(soft, ce) for k in range(3))
    den = sum(w[k] * ys[k] for ys in soft for k in range(3))
    loss = loss_fn(_logits(), torch.tensor(soft, dtype=torch.float64))
    assert loss.item() == pytest.approx(num / den, rel=1e-6)
    loss_fn.set_epoch(0)
    unweighted = sum(ys[k] * ce_i[k] for ys, ce_i in zip(soft, ce) for k in range(3)) / 2
    assert loss_fn(_logits(), torch.tensor(soft, dtype=torch.float64)).item() == pytest.approx(unweighted, rel=1e-6)


def test_class_balanced_matches_hand_calculation():
    beta = 0.9
    w = _cb_weights(beta)
    assert sum(w) == pytest.approx(3.)
    loss_fn = ClassBalancedCrossEntropy(COUNTS, beta=beta)
    torch.testing.assert_close(loss_fn.weight, torch.tensor(w, dtype=torch.float32))
    expected = (w[0] * _ce(LOGITS[0], 0) + w[2] * _ce(LOGITS[1], 2)) / (w[0] + w[2])
    assert loss_fn(_logits(), _targets()).item() == pytest.approx(expected, rel=1e-6)
    one_hot = nn.functional.one_hot(_targets(), 3).double()
    torch.testing.assert_close(loss_fn(_logits(), one_hot), loss_fn(_logits(), _targets()))


def test_effective_number_weights_limits():
    torch.testing.assert_close(effective_number_weights(COUNTS, beta=0.), torch.ones(3))
    w = effective_number_weights([1000, 1], beta=0.999999)  # close to inverse frequency
    assert (w[1] / w[0]).item() == pytest.approx(1000., rel=1e-2)
    with pytest.raises(ValueError, match='beta'):
        effective_number_weights(COUNTS, beta=1.)


def test_buffers_follow_to():
    losses = {
        'log_prior': LogitAdjustedLoss(COUNTS),
        'margins': LDAMLoss(COUNTS, drw_epoch=0),
        'drw_weight': LDAMLoss(COUNTS, drw_epoch=0),
        'weight': ClassBalancedCrossEntropy(COUNTS),
    }
    for name, loss_fn in losses.items():
        assert name in dict(loss_fn.named_buffers())
        assert getattr(loss_fn, name).dtype == torch.float32
        loss_fn.to(torch.float64)
        assert getattr(loss_fn, name).dtype == torch.float64
        out = loss_fn(_logits(), _targets())
        assert out.dtype == torch.float64 and torch.isfinite(out)
    camc = CamcLoss(LDAMLoss(COUNTS)).to(torch.float64)
    assert camc.criterion.margins.dtype == torch.float64


def test_camc_loss_forwards_set_epoch():
    inner = LDAMLoss(COUNTS, drw_epoch=3, beta=0.9)
    criterion = CamcLoss(inner)
    criterion.set_epoch(3)
    assert inner.weight is not None
    logits, aux = _logits(), _logits() * 0.5
    out = criterion(CamcOutput(logits, aux, 0.25), _targets())
    torch.testing.assert_close(out, inner(logits, _targets()) + 0.25 * inner(aux, _targets()))
    criterion.set_epoch(0)
    assert inner.weight is None
    plain = CamcLoss(nn.CrossEntropyLoss())
    plain.set_epoch(5)  # a criterion without set_epoch is left alone, and still combines both terms
    torch.testing.assert_close(plain(CamcOutput(logits, aux, 0.25), _targets()),
                               F.cross_entropy(logits, _targets()) + 0.25 * F.cross_entropy(aux, _targets()))


def test_every_loss_has_set_epoch():
    for name in ('ce', 'logit_adjusted', 'balanced_softmax', 'ldam', 'class_balanced'):
        loss_fn = create_loss(name, COUNTS)
        before = loss_fn(_logits(), _targets())
        loss_fn.set_epoch(7)
        torch.testing.assert_close(loss_fn(_logits(), _targets()), before)  # no DRW configured: unchanged
    # the one loss with an epoch schedule: create_loss passes it on, and set_epoch switches it at that epoch
    drw = create_loss('ldam', COUNTS, drw_epoch=7)
    before = drw(_logits(), _targets())
    drw.set_epoch(6)
    torch.testing.assert_close(drw(_logits(), _targets()), before)
    drw.set_epoch(7)
    assert not torch.allclose(drw(_logits(), _targets()), before)


def test_create_loss_ce_hard_and_soft():
    loss_fn = create_loss('ce', label_smoothing=0.1)
    assert isinstance(loss_fn, nn.CrossEntropyLoss)
    torch.testing.assert_close(
        loss_fn(_logits(), _targets()), nn.CrossEntropyLoss(label_smoothing=0.1)(_logits(), _targets()))
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(loss_fn(_logits(), soft), SoftTargetCrossEntropy()(_logits(), soft))
    assert isinstance(create_loss('CE'), CrossEntropy)


def test_create_loss_variants():
    la = create_loss('logit_adjusted', COUNTS, tau=0.5)
    assert isinstance(la, LogitAdjustedLoss) and la.tau == 0.5
    bs = create_loss('balanced-softmax', COUNTS)
    assert isinstance(bs, LogitAdjustedLoss) and bs.tau == 1.
    ldam = create_loss('ldam', COUNTS, drw_epoch=4, logit_scale_in=16.)
    assert isinstance(ldam, LDAMLoss) and ldam.drw_epoch == 4 and ldam.logit_scale_in == 16.
    cb = create_loss('class_balanced', torch.tensor(COUNTS), beta=0.99)
    assert isinstance(cb, ClassBalancedCrossEntropy) and cb.beta == 0.99


def test_create_loss_errors():
    with pytest.raises(ValueError, match='ce, logit_adjusted, balanced_softmax, ldam, class_balanced'):
        create_loss('focal', COUNTS)
    for name in ('logit_adjusted', 'balanced_softmax', 'ldam', 'class_balanced'):
        with pytest.raises(ValueError, match='cls_num_list'):
            create_loss(name)
    with pytest.raises(ValueError, match='tau=1'):
        create_loss('balanced_softmax', COUNTS, tau=0.5)
    with pytest.raises(ValueError, match=r'indices 1, 3'):
        LogitAdjustedLoss([5, 0, 2, 0])
    with pytest.raises(ValueError, match=r'indices 2'):
        LDAMLoss([5, 3, 0])
    with pytest.raises(ValueError, match='1-D'):
        ClassBalancedCrossEntropy([[1, 2]])
    with pytest.raises(ValueError, match='drw_epoch'):
        LDAMLoss(COUNTS, drw_epoch=-1)
