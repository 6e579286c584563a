"""The rows of the ablation table (model and loss settings) and the (row, seed) runs in priority order."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

__all__ = ['Row', 'ROWS', 'ROW_INDEX', 'LINEAR', 'RunSpec', 'select_rows', 'plan_runs']


@dataclass(frozen=True)
class Row:
    """One row of the ablation table.

    Attributes:
        name: Key used on the command line and in the results.
        label: What the row is, for the table.
        model_kwargs: Head options, kwargs of ``timm.create_model(<--model>, ...)`` for any CAMC model.
        loss: ``timm_camc.loss.create_loss`` name; LDAM's ``drw_epoch`` comes from the schedule (80 % of the
            epochs) and, with a cosine classifier, ``logit_scale_in`` from the model's ``cosine_scale``.
        loss_kwargs: Kwargs of the loss.
        sampler: ``timm_camc.data.create_sampler`` name.
        calib_warmup: Fraction of the epochs trained as the plain classifier before the calibration joins
            (``CamcLoss``'s ``calib_warmup``, in epochs of the schedule).
        tier: Priority when the time budget cannot hold every run (0 first). Tier 0 is the central comparison:
            does CAMC beat the plain normalised classifier, alone and with logit adjustment. Tier 3: the method
            candidates of issue 12 (run when named).
        baseline: The row's plain counterpart; the report gives the paired per-seed difference to it.
    """
    name: str
    label: str
    model_kwargs: Mapping[str, Any]
    loss: str = 'ce'
    loss_kwargs: Mapping[str, Any] = field(default_factory=dict)
    sampler: str = 'instance'
    calib_warmup: float = 0.
    tier: int = 0
    baseline: str = ''

    @property
    def classifier(self) -> str:
        if not self.model_kwargs.get('norm_classifier', True):
            return 'linear'
        return f"cosine s={self.model_kwargs.get('cosine_scale', 16.):g}"

    @property
    def camc(self) -> str:
        return self.model_kwargs.get('camc', 'global')


LINEAR = dict(camc='none', norm_classifier=False)


def _cosine(scale: float) -> Dict[str, Any]:
    return dict(camc='none', norm_classifier=True, cosine_scale=scale)


def _camc(variant: str, norm_classifier: bool = True, scale: float = 16.) -> Dict[str, Any]:
    return dict(camc=variant, norm_classifier=norm_classifier, cosine_scale=scale, proto_momentum=0.9, camc_topk=32,
                aux_weight=0.5)


_LA = dict(tau=1.)
# LDAM-DRW's own recipe; its scale (30 on cosines, 1 on the raw logits of a linear classifier) comes from the
# classifier, by timm_camc.loss.classifier_loss_kwargs
_LDAM = dict(max_margin=0.5, beta=0.9999)

ROWS: Tuple[Row, ...] = (
    Row('ce', 'Plain CE', LINEAR),
    Row('cosine_s8', 'Normalised classifier', _cosine(8.), tier=2),
    Row('cosine_s16', 'Normalised classifier', _cosine(16.)),
    Row('cosine_s32', 'Normalised classifier', _cosine(32.), tier=2),
    Row('camc_global', 'CAMC global (B) + normalised classifier', _camc('global'), baseline='cosine_s16'),
    Row('camc_class', 'CAMC class (A) + normalised classifier', _camc('class'), tier=1, baseline='cosine_s16'),
    Row('camc_global_linear', 'CAMC global (B) without the normalised classifier', _camc('global', False), tier=1,
        baseline='ce'),
    Row('la_linear', 'Logit-adjusted CE (tau=1)', LINEAR, 'logit_adjusted', _LA),
    Row('la_cosine', 'Logit-adjusted CE (tau=1) + normalised classifier', _cosine(16.), 'logit_adjusted', _LA),
    Row('camc_global_la', 'CAMC global (B) + logit-adjusted CE', _camc('global'), 'logit_adjusted', _LA,
        baseline='la_cosine'),
    # issue 12 candidates, each on top of the best re-balancing (logit adjustment) against la_cosine
    Row('camc_nonneg_la', 'CAMC global (B), non-negative map conv, + logit-adjusted CE',
        dict(_camc('global'), nonneg_map=True), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('camc_target_la', 'CAMC target (C, training only) + logit-adjusted CE', _camc('target'), 'logit_adjusted',
        _LA, tier=3, baseline='la_cosine'),
    Row('camc_global_la_aux1', 'CAMC global (B), auxiliary weight 1, + logit-adjusted CE',
        dict(_camc('global'), aux_weight=1.), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('camc_nonneg_la_aux1', 'CAMC global (B), non-negative map conv, auxiliary weight 1, + logit-adjusted CE',
        dict(_camc('global'), nonneg_map=True, aux_weight=1.), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('camc_global_la_warm25', 'CAMC global (B), calibrating after a warm-up of 25 % of the epochs, + LA',
        _camc('global'), 'logit_adjusted', _LA, calib_warmup=0.25, tier=3, baseline='la_cosine'),
    # the three levers that gained on both screen seeds, together
    Row('camc_nonneg_la_aux1_warm25', 'CAMC global (B), non-negative map conv, auxiliary weight 1, warm-up 25 %, + LA',
        dict(_camc('global'), nonneg_map=True, aux_weight=1.), 'logit_adjusted', _LA, calib_warmup=0.25, tier=3,
        baseline='la_cosine'),
    Row('camc_batch_la', 'CAMC batch (D: correlation across the batch in training) + logit-adjusted CE',
        _camc('batch'), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('camc_global_bq', 'CAMC global (B), maps from the balanced (logit-adjusted) prediction, plain CE',
        dict(_camc('global'), balanced_q=True), tier=3, baseline='camc_global'),
    Row('camc_global_la_m99', 'CAMC global (B), prototype momentum 0.99, + logit-adjusted CE',
        dict(_camc('global'), proto_momentum=0.99), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('la_cosine_s32', 'Logit-adjusted CE (tau=1) + normalised classifier s=32', _cosine(32.), 'logit_adjusted', _LA,
        tier=3),
    Row('camc_global_la_s32', 'CAMC global (B) + logit-adjusted CE, cosine scale 32', _camc('global', scale=32.),
        'logit_adjusted', _LA, tier=3, baseline='la_cosine_s32'),
    Row('ldam_drw', 'LDAM-DRW on a linear classifier (margins on raw logits, scale 1)', LINEAR, 'ldam',
        _LDAM, tier=2),
    Row('ldam_drw_norm', 'LDAM-DRW (its normalised classifier, scale 30: the published recipe)', _cosine(16.), 'ldam',
        _LDAM, tier=1),
    Row('camc_global_ldam_drw', 'CAMC global (B) + LDAM-DRW', _camc('global'), 'ldam', _LDAM, tier=1,
        baseline='ldam_drw_norm'),
)
ROW_INDEX = {row.name: i for i, row in enumerate(ROWS)}


def select_rows(spec: str) -> List[Row]:
    """Rows named in a comma-separated list ('all' for every row), in table order."""
    if spec.strip() == 'all':
        return list(ROWS)
    names = [n.strip() for n in spec.split(',') if n.strip()]
    unknown = [n for n in names if n not in ROW_INDEX]
    if unknown:
        raise ValueError(f'Unknown rows {unknown}; known: {", ".join(ROW_INDEX)}')
    return [ROWS[i] for i in sorted({ROW_INDEX[n] for n in names})]


@dataclass(frozen=True)
class RunSpec:
    row: Row
    seed: int
    seed_index: int

    @property
    def key(self) -> str:
        return f'{self.row.name}/s{self.seed}'


def plan_runs(rows: Sequence[Row], seeds: Sequence[int]) -> List[RunSpec]:
    """All (row, seed) runs in priority order: tiers 0 and 1 with their first two seeds (row by row, so CAMC rows and
    their counterparts get two seeds before anything else), then each further tier seed by seed, then any further
    seeds."""
    first = [RunSpec(r, s, i) for tier in (0, 1) for r in rows if r.tier == tier for i, s in enumerate(seeds[:2])]
    later = sorted({r.tier for r in rows if r.tier >= 2})
    rest = [RunSpec(r, s, i) for tier in later for i, s in enumerate(seeds[:2]) for r in rows if r.tier == tier]
    more = [RunSpec(r, s, i + 2) for i, s in enumerate(seeds[2:]) for r in sorted(rows, key=lambda r: r.tier)]
    return first + rest + more
