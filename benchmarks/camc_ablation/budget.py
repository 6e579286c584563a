"""The time budget: its clock, and which runs and how many epochs fit in the time left."""
import time
from typing import Any, Dict, Mapping, Sequence

__all__ = ['now', 'fit_plan']


def now() -> float:
    """Wall clock of the time budget. Callers look it up here at call time (``budget.now()``), so that a test can
    replace it for the whole ablation with one ``monkeypatch.setattr(budget, 'now', ...)``."""
    return time.time()


def fit_plan(
        reports: Sequence[Mapping[str, Any]], priority: Sequence[str], requested_epochs: int, done_epochs: int,
        time_left: float, policy: str, core: Sequence[str], min_epochs: int = 25, margin: float = 1.15,
) -> Dict[str, Any]:
    """Which runs to keep, and for how many epochs, so that they end within ``time_left`` seconds.

    Throughput is modelled as a constant aggregate rate A (epochs per second, summed over the runs that were
    measured concurrently): n runs of E epochs need ``n * (E - done) / A`` more seconds, times ``margin``.

    Policies: 'epochs' keeps every run and lowers the epochs; 'rows' keeps the epochs and drops runs from the end of
    ``priority``; 'auto' does 'rows' as long as the ``core`` runs all fit, and otherwise keeps only the core and
    lowers their epochs (a full schedule for the central comparison before breadth).

    Args:
        reports: Per process: ``runs`` (keys measured concurrently) and ``epoch_s`` (seconds per epoch of them).
        priority: Run keys, most important first.
        requested_epochs: Epochs asked for.
        done_epochs: Epochs already trained by every run.
        time_left: Seconds left for training.
        policy: 'auto', 'rows' or 'epochs'.
        core: Run keys that 'auto' keeps.
        min_epochs: Fewest epochs to plan (the warm-up of the schedule must not change).
        margin: Safety factor on the predicted time.

    Returns:
        ``epochs``, ``keep`` (run keys), ``drop`` (run keys), ``rate`` (A), ``predicted_s`` and ``policy``.
    """
    measured = [k for r in reports for k in r['runs']]
    rate = sum(len(r['runs']) / max(r['epoch_s'], 1e-9) for r in reports if r['runs'])
    ordered = [k for k in priority if k in measured]

    def seconds(n: int, epochs: int) -> float:
        return n * max(epochs - done_epochs, 0) / max(rate, 1e-9) * margin

    def max_epochs(n: int) -> int:
        epochs = done_epochs + int(time_left * max(rate, 1e-9) / (margin * max(n, 1)))
        epochs = min(requested_epochs, epochs)
        if epochs < requested_epochs and epochs >= 30:
            epochs -= epochs % 10  # round schedule: milestones at whole epochs
        return max(epochs, min_epochs, done_epochs + 1)

    keep, epochs = ordered, requested_epochs
    if policy in ('rows', 'auto'):
        n = len(ordered)
        while n > 0 and seconds(n, requested_epochs) > time_left:
            n -= 1
        keep = ordered[:n]
        if policy == 'auto':
            core_set = [k for k in ordered if k in set(core)]
            if not set(core_set) <= set(keep):
                keep = core_set
                epochs = max_epochs(len(keep))
        elif n == 0:
            keep, epochs = ordered[:1], max_epochs(1)
    elif policy == 'epochs':
        epochs = max_epochs(len(keep))
    else:
        raise ValueError(f'Unknown fit policy {policy!r}')
    return dict(policy=policy, epochs=epochs, keep=list(keep), drop=[k for k in ordered if k not in keep],
                rate_epochs_per_s=rate, predicted_s=seconds(len(keep), epochs), time_left_s=time_left)
