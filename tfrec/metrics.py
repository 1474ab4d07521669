"""Full-ranking metrics: ranks with explicit tie handling, metric values from ranks,
and streaming Keras metrics.

Rank of the target among all candidate items (1 = best):

* ``conservative`` (default): number of candidates scoring ``>=`` the target's
  score (the target included). A model that gives every item the same score gets
  rank = number of candidates, i.e. ~0 on every metric.
* ``optimistic``: ``1 +`` number of candidates scoring strictly ``>`` the target
  (what the HCRNN authors' code does).

A target whose score is NaN (a diverged model) gets rank :data:`UNRANKED` under both
rules, a miss at every cut-off: comparisons with NaN are false, so without this rule
it would count as ranked first (optimistic) and report perfect metrics. NaN scores
of other items never rank above the target.

Metrics for one target per sample (``K`` = cut-off):

* ``recall@K`` = ``hitrate@K`` = share of samples with rank ``<= K``;
* ``mrr@K`` = mean of ``1/rank`` for rank ``<= K``, 0 beyond (truncated);
* ``precision@K`` = ``recall@K / K``;
* ``ndcg@K`` = mean of ``1/log2(rank + 1)`` for rank ``<= K``.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import keras
import numpy as np
from keras import ops

TIES = ("conservative", "optimistic")
#: rank given to a target whose score is NaN: beyond every cut-off.
UNRANKED = np.iinfo(np.int32).max
METRICS = ("recall", "mrr", "precision", "ndcg", "hitrate")


def ranks_from_scores(scores, targets, ties: str = "conservative", candidate_mask=None):
    """Rank of each target among the candidates.

    Args:
        scores: float array ``[..., N]``.
        targets: int array ``[...]`` of target indices.
        ties: ``"conservative"`` or ``"optimistic"`` (see module docstring).
        candidate_mask: optional bool ``[..., N]`` (or ``[N]``); False excludes an
            item from the ranking (e.g. padding, items already seen). The target
            itself always stays a candidate.

    Returns:
        int64 ranks ``[...]`` (``>= 1``).

    Example:

    >>> s = np.array([[0.1, 0.5, 0.5, 0.2]])
    >>> ranks_from_scores(s, np.array([2])).tolist(), ranks_from_scores(s, np.array([2]), "optimistic").tolist()
    ([2], [1])
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.shape[:-1] != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} do not match")
    n = scores.shape[-1]
    if targets.size and (targets.min() < 0 or targets.max() >= n):
        raise ValueError(f"target index out of range [0, {n})")
    t = np.take_along_axis(scores, targets[..., None], axis=-1)
    cmp = scores >= t if ties == "conservative" else scores > t
    if candidate_mask is not None:
        cm = np.broadcast_to(np.asarray(candidate_mask, bool), scores.shape).copy()
        np.put_along_axis(cm, targets[..., None], True, axis=-1)
        cmp &= cm
    count = cmp.sum(axis=-1)
    rank = count if ties == "conservative" else count + 1
    return np.where(np.isnan(t[..., 0]), UNRANKED, rank)


def metrics_from_ranks(ranks, ks: Sequence[int] = (5, 20),
                       metrics: Iterable[str] = ("recall", "mrr"), scale: float = 1.0) -> Dict[str, float]:
    """Micro-averaged metric values from ranks.

    Example:

    >>> metrics_from_ranks(np.array([1, 2, 30]), ks=[2], metrics=["recall", "mrr"])
    {'recall@2': 0.6666666666666666, 'mrr@2': 0.5}
    """
    r = np.asarray(ranks, dtype=np.float64).ravel()
    out = {}
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; expected one of {METRICS}")
        for k in ks:
            hit = r <= k
            if m in ("recall", "hitrate"):
                v = hit.mean() if len(r) else 0.0
            elif m == "mrr":
                v = np.where(hit, 1.0 / r, 0.0).mean() if len(r) else 0.0
            elif m == "precision":
                v = hit.mean() / k if len(r) else 0.0
            else:
                v = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0).mean() if len(r) else 0.0
            out[f"{m}@{k}"] = float(v) * scale
    return out


def perplexity(log_probs_of_targets) -> float:
    """``exp(-mean log p(target))``."""
    lp = np.asarray(log_probs_of_targets, dtype=np.float64)
    return float(np.exp(-lp.mean())) if lp.size else float("nan")


def rmse(pred, true) -> float:
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    return float(np.sqrt(np.mean((pred - true) ** 2))) if pred.size else float("nan")


# ----------------------------------------------------------- Keras metrics
@keras.saving.register_keras_serializable(package="tfrec")
class RankingMetric(keras.metrics.Metric):
    """Streaming full-ranking metric ``kind@k`` for Keras ``compile(metrics=...)``.

    ``y_true`` holds target indices (0 = no target, ignored) and ``y_pred`` the
    scores over all items. Works for ``[B]``/``[B, N]`` and ``[B, T]``/``[B, T, N]``.

    Args:
        kind: one of ``recall, mrr, precision, ndcg, hitrate``.
        k: cut-off.
        ties: ``conservative`` (default) or ``optimistic``.

    Example:

    >>> m = RankingMetric("recall", 2)
    >>> m.update_state(np.array([1]), np.array([[0.0, 0.9, 0.1]]))
    >>> float(m.result())
    1.0
    """

    def __init__(self, kind="recall", k=20, ties="conservative", name=None, **kwargs):
        if kind not in METRICS:
            raise ValueError(f"unknown metric {kind!r}; expected one of {METRICS}")
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        super().__init__(name=name or f"{kind}@{k}", **kwargs)
        self.kind, self.k, self.ties = kind, int(k), ties
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        y_pred = ops.cast(y_pred, "float32")
        t = ops.take_along_axis(y_pred, ops.expand_dims(y_true, -1), axis=-1)
        if self.ties == "conservative":
            rank = ops.sum(ops.cast(y_pred >= t, "float32"), axis=-1)
        else:
            rank = 1.0 + ops.sum(ops.cast(y_pred > t, "float32"), axis=-1)
        # a NaN target score is a miss (worst rank), never a hit (see module docstring)
        rank = ops.where(ops.isnan(ops.squeeze(t, -1)), float(UNRANKED), rank)
        hit = ops.cast(rank <= self.k, "float32")
        if self.kind in ("recall", "hitrate"):
            v = hit
        elif self.kind == "mrr":
            v = hit / rank
        elif self.kind == "precision":
            v = hit / self.k
        else:
            v = hit / (ops.log(rank + 1.0) / np.log(2.0))
        w = ops.cast(y_true != 0, "float32")
        if sample_weight is not None:
            w = w * ops.cast(sample_weight, "float32")
        self.total.assign_add(ops.sum(v * w))
        self.count.assign_add(ops.sum(w))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "k": self.k, "ties": self.ties}
