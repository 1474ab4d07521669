"""Ranking losses of GRU4Rec (Hidasi et al. 2016; Hidasi & Karatzoglou 2018).

All losses take a score matrix ``scores [B, B + S]`` laid out as GRU4Rec's
mini-batch training produces it: row ``b`` is an example, column ``b`` (``b < B``)
is its target (the *positive*), the other ``B - 1`` target columns are the other
examples' targets (*mini-batch negatives*) and the last ``S`` columns are extra
negatives shared by the whole batch (e.g. popularity-sampled with exponent
``alpha``, see :func:`popularity_sampler_logits`).

A boolean ``negative_mask [B, B + S]`` says which columns are negatives of which
row: :func:`negative_mask` gives the standard one (everything except the diagonal
and the columns of invalid, i.e. run-dry, lanes).

Each loss returns the per-example loss ``[B]``. Definitions, with ``r_i`` the
positive's score, ``r_j`` the negatives' scores and ``N_S`` their number:

* ``top1``:      ``mean_j [sigmoid(r_j - r_i) + sigmoid(r_j^2)]``
* ``bpr``:       ``-mean_j log sigmoid(r_i - r_j)``
* ``top1_max``:  ``sum_j s_j [sigmoid(r_j - r_i) + sigmoid(r_j^2)]``
* ``bpr_max``:   ``-log sum_j s_j sigmoid(r_i - r_j) + reg * sum_j s_j r_j^2``
* ``cross_entropy``: ``-log softmax(r)_i`` over the positive and the negatives.

where ``s_j = softmax over the negatives only`` (the positive excluded) -- the
"max" losses of the Top-k-gains paper. The weighted sums are *sums* (weights
``s_j`` add up to 1), not means over the negatives: averaging would divide the
loss and its score regulariser by ``N_S``. :func:`session_loss` reduces per-row
losses like the official implementation: sum over valid rows divided by ``B``.
"""

from __future__ import annotations

from typing import Optional

from keras import ops

LOSSES = ("cross_entropy", "top1", "bpr", "top1_max", "bpr_max")
#: added inside the logarithm of the BPR-max ranking term (the official GRU4Rec uses 1e-24)
BPR_MAX_EPS = 1e-24


def negative_mask(batch_size, num_extra: int = 0, valid=None):
    """Boolean ``[B, B + S]``: True where a column is a negative of the row.

    Mini-batch negatives are the other rows' targets (the diagonal is the
    positive); columns of invalid rows (lanes without data) are excluded; the
    ``num_extra`` sampled columns are negatives of every row.
    """
    B = batch_size
    eye = ops.cast(ops.eye(B), "bool")
    cols = ops.logical_not(eye)
    if valid is not None:
        cols = ops.logical_and(cols, ops.expand_dims(ops.cast(valid, "bool"), 0))
    if num_extra:
        cols = ops.concatenate([cols, ops.ones((B, num_extra), "bool")], axis=1)
    return cols


def _positive(scores):
    B = ops.shape(scores)[0]
    return ops.expand_dims(ops.diagonal(scores[:, :B]), 1)


def _masked_mean(x, mask):
    m = ops.cast(mask, x.dtype)
    return ops.divide_no_nan(ops.sum(x * m, axis=1), ops.sum(m, axis=1))


def softmax_negatives(scores, mask):
    """Softmax of each row over its negatives only (the positive gets weight 0)."""
    m = ops.cast(mask, scores.dtype)
    big = ops.max(scores - (1.0 - m) * 1e9, axis=1, keepdims=True)
    e = ops.exp(ops.minimum(scores - big, 0.0)) * m
    return ops.divide_no_nan(e, ops.sum(e, axis=1, keepdims=True))


def top1(scores, mask):
    """TOP1 (GRU4Rec 2016): mean over negatives of ``sigmoid(r_j - r_i) + sigmoid(r_j^2)``."""
    r_i = _positive(scores)
    return _masked_mean(ops.sigmoid(scores - r_i) + ops.sigmoid(scores**2), mask)


def bpr(scores, mask):
    """BPR: mean over negatives of ``-log sigmoid(r_i - r_j)``."""
    r_i = _positive(scores)
    return _masked_mean(-ops.log_sigmoid(r_i - scores), mask)


def top1_max(scores, mask):
    """TOP1-max: softmax(negatives)-weighted sum of the TOP1 terms."""
    r_i = _positive(scores)
    s = softmax_negatives(scores, mask)
    return ops.sum(s * (ops.sigmoid(scores - r_i) + ops.sigmoid(scores**2)), axis=1)


def bpr_max(scores, mask, reg: float = 1.0):
    """BPR-max with its score regulariser (Hidasi & Karatzoglou 2018, eq. 8)::

        -log(sum_j s_j sigmoid(r_i - r_j) + 1e-24) + reg * sum_j s_j r_j^2

    ``s_j`` is the softmax over the negatives only; both sums are weighted sums
    over negatives (not means).
    """
    r_i = _positive(scores)
    s = softmax_negatives(scores, mask)
    ranking = -ops.log(ops.sum(s * ops.sigmoid(r_i - scores), axis=1) + BPR_MAX_EPS)
    return ranking + reg * ops.sum(s * scores**2, axis=1)


def cross_entropy(scores, mask):
    """Softmax cross-entropy of the positive against the negatives in ``mask``."""
    B = ops.shape(scores)[0]
    eye = ops.cast(ops.eye(B, ops.shape(scores)[1]), "bool")
    keep = ops.cast(ops.logical_or(mask, eye), scores.dtype)
    big = ops.max(scores - (1.0 - keep) * 1e9, axis=1, keepdims=True)
    z = scores - big
    lse = ops.log(ops.sum(ops.exp(ops.minimum(z, 0.0)) * keep, axis=1))
    return lse - ops.squeeze(_positive(z), 1)


def per_example_loss(name: str, scores, mask, bpreg: float = 1.0):
    """Dispatches to the loss called ``name`` (see :data:`LOSSES`; ``-`` accepted)."""
    name = name.replace("-", "_")
    if name == "bpr_max":
        return bpr_max(scores, mask, bpreg)
    fns = {"top1": top1, "bpr": bpr, "top1_max": top1_max, "cross_entropy": cross_entropy,
           "xe": cross_entropy}
    if name not in fns:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
    return fns[name](scores, mask)


def session_loss(name: str, scores, valid=None, num_extra: int = 0, bpreg: float = 1.0):
    """Batch loss as GRU4Rec trains it: per-example losses summed over valid rows
    and divided by the batch size ``B`` (lanes that ran dry contribute 0).

    Args:
        name: one of :data:`LOSSES`.
        scores: ``[B, B + num_extra]`` (see module docstring).
        valid: bool ``[B]`` rows/lanes holding data (``None``: all).
        num_extra: number of shared sampled negative columns at the end.
        bpreg: BPR-max score regulariser weight.

    Example:

    >>> import numpy as np
    >>> s = np.array([[2.0, 0.0], [1.0, 1.0]], "float32")
    >>> round(float(session_loss("bpr", s)), 4)  # (-log sig(2) - log sig(0)) / 2
    0.41
    """
    B = ops.shape(scores)[0]
    mask = negative_mask(B, num_extra, valid)
    per = per_example_loss(name, scores, mask, bpreg)
    if valid is not None:
        per = per * ops.cast(valid, per.dtype)
    return ops.sum(per) / ops.cast(B, per.dtype)


def popularity_sampler_logits(counts, alpha: float):
    """Log-probabilities ``log(count^alpha)`` (normalised) for sampling extra
    negatives proportionally to ``count^alpha`` (0 counts, e.g. padding, never drawn).

    Args:
        counts: numpy ``[N]`` item counts in the training data.
        alpha: popularity exponent (0: uniform over seen items, 1: popularity).
    """
    import numpy as np

    c = np.asarray(counts, np.float64)
    w = np.where(c > 0, c ** float(alpha), 0.0)
    with np.errstate(divide="ignore"):
        return np.log(w / w.sum()).astype(np.float32)


def loss_from_config(name: Optional[str]) -> str:
    """Canonical loss name (``bpr-max`` -> ``bpr_max``), validated."""
    n = (name or "cross_entropy").replace("-", "_")
    if n == "xe":
        n = "cross_entropy"
    if n not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
    return n
