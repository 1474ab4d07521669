"""Full-ranking evaluation of any recommender over a split.

Protocols bundle the choices that change numbers:

======================  =============  ========  =======  ======  ========================
protocol                ties           padding   history  scale   metrics
======================  =============  ========  =======  ======  ========================
``default``             conservative   excluded  kept     1       recall/mrr/ndcg @5,10,20
``hcrnn``               optimistic     ranked    kept     100     recall/mrr @3,20
``hcrnn_conservative``  conservative   ranked    kept     100     recall/mrr @3,20
======================  =============  ========  =======  ======  ========================

``hcrnn`` replicates the HCRNN authors' evaluation: all 1,981 classes (index 0
included) are candidates, rank = 1 + number of strictly higher scores, every test
prefix counts once, micro-averaged, x100. Sampled evaluation is never done
silently: :func:`evaluate` always ranks against every item unless
``sampled_negatives`` is given, and then labels the result ``sampled``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from tfrec.data.pipelines import prefix_batches, sequence_batches
from tfrec.data.schema import SequenceSet
from tfrec.metrics import UNRANKED, metrics_from_ranks, ranks_from_scores


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How ranks are computed and reported.

    Attributes:
        ks: cut-offs.
        metrics: metric names (see :mod:`tfrec.metrics`).
        ties: ``conservative`` or ``optimistic``.
        exclude_padding: drop index 0 from the candidates.
        exclude_history: drop items already in the history from the candidates.
        scale: multiply metric values (100 for percentages).
    """

    ks: Tuple[int, ...] = (5, 10, 20)
    metrics: Tuple[str, ...] = ("recall", "mrr", "ndcg")
    ties: str = "conservative"
    exclude_padding: bool = True
    exclude_history: bool = False
    scale: float = 1.0


PROTOCOLS: Dict[str, Protocol] = {
    "default": Protocol(),
    "hcrnn": Protocol(ks=(3, 20), metrics=("recall", "mrr"), ties="optimistic",
                      exclude_padding=False, scale=100.0),
}
PROTOCOLS["hcrnn_conservative"] = dataclasses.replace(PROTOCOLS["hcrnn"], ties="conservative")


def get_protocol(protocol: Union[str, Protocol]) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def _log_softmax_at(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    m = scores.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(scores - m).sum(axis=-1)) + m[..., 0]
    return np.take_along_axis(scores, targets[..., None], axis=-1)[..., 0] - lse


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="target", leave=False)


def collect_ranks(model, seqs: SequenceSet, protocol: Union[str, Protocol] = "default",
                  batch_size: int = 512, progress: bool = False,
                  sampled_negatives: Optional[int] = None, seed: int = 0):
    """Ranks (and target log-probabilities when the model is probabilistic) of
    every target in ``seqs``, in the order of ``seqs.target_index()`` for the
    prefix layout (sequence layout: per sequence, per position)."""
    p = get_protocol(protocol)
    feats = tuple(getattr(model, "input_features", ("items",)))
    use_sequence = bool(getattr(model, "causal", False)) and not p.exclude_history
    max_len = getattr(model, "sequence_scoring_max_length", None)
    if use_sequence and max_len is not None and len(seqs.lengths) and int(seqs.lengths.max()) > max_len:
        use_sequence = False  # one pass over such long sequences would not fit in memory
    ranks, logps = [], []
    nan_targets = 0
    bar = _progress(seqs.num_targets, progress, "evaluate")
    rng = np.random.default_rng(seed)
    if use_sequence:
        seq_bs = max(1, batch_size // 8)
        batches = ((x, y, model.score_sequence_batch(x)) for x, y in
                   sequence_batches(seqs, seq_bs, bucket=True, features=feats))
    else:
        batches = ((x, y, model.score_prefix_batch(x)) for x, y in
                   prefix_batches(seqs, batch_size, bucket=True, features=feats))
    for x, y, scores in batches:
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape[-1] != getattr(model, "num_items", scores.shape[-1]):
            raise ValueError(f"model returned {scores.shape[-1]} scores per row, expected num_items")
        mask = None
        if p.exclude_padding or p.exclude_history or sampled_negatives:
            mask = np.ones(scores.shape, bool)
            if p.exclude_padding:
                mask[..., 0] = False
            if p.exclude_history:  # prefix layout only
                rows = np.repeat(np.arange(len(y)), x["items"].shape[1])
                mask[rows, x["items"].ravel()] = False
                mask[..., 0] = not p.exclude_padding
            if sampled_negatives:
                keep = np.zeros(scores.shape, bool)
                neg = rng.integers(1, scores.shape[-1], size=scores.shape[:-1] + (sampled_negatives,))
                np.put_along_axis(keep, neg, True, axis=-1)
                mask &= keep
        yy = np.asarray(y)
        r = ranks_from_scores(scores, yy, p.ties, mask)
        valid = yy != 0
        nan_targets += int((r[valid] == UNRANKED).sum())  # ranks_from_scores marks NaN targets
        ranks.append(r[valid])
        if getattr(model, "probabilistic", False):
            logps.append(_log_softmax_at(scores, yy)[valid])
        if bar is not None:
            bar.update(int(valid.sum()))
    if bar is not None:
        bar.close()
    ranks = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    logps = np.concatenate(logps) if logps else None
    if nan_targets:
        warnings.warn(f"{nan_targets} of {len(ranks)} targets have NaN scores (the model diverged); "
                      "they count as misses", RuntimeWarning, stacklevel=2)
    return ranks, logps


def evaluate(model, seqs: SequenceSet, protocol: Union[str, Protocol] = "default",
             batch_size: int = 512, progress: bool = False, ks: Optional[Sequence[int]] = None,
             sampled_negatives: Optional[int] = None, seed: int = 0) -> Dict[str, float]:
    """Evaluates ``model`` on every target of ``seqs`` with full ranking.

    Args:
        model: any :class:`~tfrec.models.base.Recommender`.
        seqs: the split (e.g. ``dataset.test``).
        protocol: ``"default"``, ``"hcrnn"`` or a :class:`Protocol`.
        ks: override the protocol's cut-offs.
        sampled_negatives: rank against this many uniformly sampled negatives
            instead of all items (labelled ``sampled`` in the result; not comparable
            with full ranking).

    Returns:
        ``{"recall@20": ..., "mrr@20": ..., "targets": n}`` (plus ``perplexity``
        for probabilistic models).

    Example:

    >>> from tfrec.data import SequenceSet
    >>> from tfrec.models.baselines import Pop
    >>> seqs = SequenceSet.from_lists([[1, 2, 2], [2, 2]])
    >>> m = Pop(num_items=3); m.counts = np.array([0, 1, 5])
    >>> evaluate(m, seqs, ks=[1], protocol="default")["recall@1"]
    1.0
    """
    p = get_protocol(protocol)
    if ks is not None:
        p = dataclasses.replace(p, ks=tuple(ks))
    ranks, logps = collect_ranks(model, seqs, p, batch_size, progress, sampled_negatives, seed)
    out = metrics_from_ranks(ranks, p.ks, p.metrics, p.scale)
    out["targets"] = int(len(ranks))
    if logps is not None and len(logps):
        out["perplexity"] = float(np.exp(-logps.mean()))
    if sampled_negatives:
        out["sampled"] = int(sampled_negatives)
    return out
