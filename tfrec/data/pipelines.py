"""Batches for training and evaluation, as numpy generators and ``tf.data`` pipelines.

Three sample layouts cover every model:

* **prefix** (prefix augmentation, as NARM/HCRNN): each target with its whole
  history as one sample. ``features["items"]`` is ``[B, T]`` right-padded with 0,
  the target is ``[B]``.
* **sequence** (prefix-parallel): each sequence once; inputs are positions
  ``0..L-2``, targets positions ``1..L-1``; targets before ``target_start`` (and
  padding) are 0, which losses and metrics ignore. For causal models this is the
  same objective as the prefix layout at a fraction of the work.
* **session-parallel** (GRU4Rec): ``B`` lanes each walking through sequences;
  one event per lane per step with a reset flag where a new sequence starts.

Feature dictionaries carry ``items`` always, plus ``deltas`` (float32 seconds since
the previous event, ``inf`` at a sequence start), ``next_deltas`` (float32 seconds
from each event to the *next* one in its sequence -- for the last history event
that is the gap to the target, i.e. the query time; used by HRNN-meta's
query-time control), ``values`` and ``user`` when the data has them and they are
requested.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from tfrec.data.schema import SequenceSet

FEATURES = ("items", "deltas", "values", "user", "next_deltas")


def _check_features(seqs: SequenceSet, features: Sequence[str]) -> None:
    for f in features:
        if f not in FEATURES:
            raise ValueError(f"unknown feature {f!r}; expected some of {FEATURES}")
    for f in ("deltas", "next_deltas"):
        if f in features and seqs.times is None:
            raise ValueError(f"feature {f!r} requested but the data has no timestamps")
    if "values" in features and seqs.values is None:
        raise ValueError("feature 'values' requested but the data has no values")
    if "user" in features and seqs.users is None:
        raise ValueError("feature 'user' requested but the data has no users")


def sequence_deltas(seqs: SequenceSet) -> np.ndarray:
    """float32 seconds since the previous event in the same sequence (inf at starts)."""
    d = np.empty(seqs.num_events, np.float32)
    if seqs.num_events:
        d[1:] = np.diff(seqs.times).astype(np.float32)
    d[seqs.offsets[:-1][seqs.lengths > 0]] = np.inf
    return d


def sequence_next_deltas(seqs: SequenceSet) -> np.ndarray:
    """float32 seconds from each event to the next one in its sequence (inf at the
    last event of a sequence, which has no successor)."""
    d = sequence_deltas(seqs)
    nxt = np.full(seqs.num_events, np.inf, np.float32)
    if seqs.num_events:
        nxt[:-1] = d[1:]
    ends = seqs.offsets[1:][seqs.lengths > 0] - 1
    nxt[ends] = np.inf
    return nxt


def _gather_padded(flat: np.ndarray, starts: np.ndarray, lens: np.ndarray, T: int, fill=0):
    B = len(starts)
    out = np.full((B, T), fill, dtype=flat.dtype)
    if B == 0 or T == 0:
        return out
    cols = np.arange(T)
    mask = cols[None, :] < lens[:, None]
    idx = (starts[:, None] + cols[None, :])[mask]
    out[mask] = flat[idx]
    return out


class Batcher:
    """Builds padded batches from a :class:`SequenceSet`.

    Args:
        seqs: the split.
        features: which inputs to emit (``"items"`` is always included).
        max_length: keep at most the last ``max_length`` history events (``None``: all).

    Example:

    >>> s = SequenceSet.from_lists([[1, 2, 3], [4, 5]])
    >>> b = Batcher(s)
    >>> x, y = b.prefix_batch(np.array([0, 0, 1]), np.array([1, 2, 1]))
    >>> x["items"].tolist(), y.tolist()
    ([[1, 0], [1, 2], [4, 0]], [2, 3, 5])
    """

    def __init__(self, seqs: SequenceSet, features: Sequence[str] = ("items",),
                 max_length: Optional[int] = None):
        features = tuple(dict.fromkeys(("items",) + tuple(features)))
        _check_features(seqs, features)
        self.seqs = seqs
        self.features = features
        self.max_length = max_length
        self._deltas = sequence_deltas(seqs) if "deltas" in features else None
        self._next_deltas = sequence_next_deltas(seqs) if "next_deltas" in features else None

    def _features(self, seq_idx, starts, lens, T) -> Dict[str, np.ndarray]:
        """The requested inputs for windows ``[starts, starts + lens)`` padded to ``T``."""
        s = self.seqs
        x: Dict[str, np.ndarray] = {"items": _gather_padded(s.items, starts, lens, T)}
        flat = {"deltas": self._deltas, "next_deltas": self._next_deltas, "values": s.values}
        for name, col in flat.items():
            if name in self.features:
                x[name] = _gather_padded(col, starts, lens, T, fill=0.0)
        if "user" in self.features:
            x["user"] = s.users[seq_idx]
        return x

    # ---------------------------------------------------------------- prefix
    def prefix_batch(self, seq_idx: np.ndarray, positions: np.ndarray):
        """Histories ``seq[:pos]`` (right-padded) and targets ``seq[pos]``."""
        s = self.seqs
        lens = positions.astype(np.int64)
        starts = s.offsets[seq_idx]
        if self.max_length is not None:
            cut = np.maximum(lens - self.max_length, 0)
            starts, lens = starts + cut, lens - cut
        T = int(lens.max()) if len(lens) else 0
        x = self._features(seq_idx, starts, lens, T)
        if "deltas" in self.features and self.max_length is not None:
            x["deltas"][:, 0] = np.where(lens > 0, np.inf, 0.0)  # the first kept event starts the window
        y = s.items[s.offsets[seq_idx] + positions].astype(np.int32)
        return x, y

    # -------------------------------------------------------------- sequence
    def sequence_batch(self, seq_idx: np.ndarray):
        """Prefix-parallel batch: inputs ``seq[:-1]``, targets ``seq[1:]`` with
        0 where a position is not a target (before ``target_start`` or padding)."""
        s = self.seqs
        L = s.lengths[seq_idx]
        starts = s.offsets[seq_idx]
        T = int(L.max()) - 1 if len(L) else 0
        lens = np.maximum(L - 1, 0)
        x = self._features(seq_idx, starts, lens, T)
        y = _gather_padded(s.items, starts + 1, lens, T)
        pos = np.arange(1, T + 1)[None, :]
        y[pos < s.target_start[seq_idx][:, None]] = 0
        return x, y.astype(np.int32)


def _bucketed_order(lengths: np.ndarray, batch_size: int, rng: Optional[np.random.Generator],
                    bucket: bool, chunk_batches: int = 64):
    """Batches of sample indices; with ``bucket`` samples of similar length share a
    batch (sorted within shuffled chunks, then batch order shuffled)."""
    n = len(lengths)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if bucket:
        chunk = batch_size * chunk_batches
        parts = []
        for a in range(0, n, chunk):
            c = order[a : a + chunk]
            parts.append(c[np.argsort(lengths[c], kind="stable")])
        order = np.concatenate(parts) if parts else order
    batches = [order[a : a + batch_size] for a in range(0, n, batch_size)]
    if rng is not None and bucket:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


def prefix_batches(seqs: SequenceSet, batch_size: int, shuffle: bool = False, seed: int = 0,
                   bucket: bool = True, features=("items",), max_length=None,
                   epoch: int = 0) -> Iterator[Tuple[dict, np.ndarray]]:
    """Yields prefix-augmented ``(features, targets)`` batches.

    With ``bucket`` (default) samples of similar history length share a batch, so
    a batch is padded only to its own longest history. Without ``shuffle`` the order
    is deterministic; with it the order depends on ``(seed, epoch)``.
    """
    batcher = Batcher(seqs, features, max_length)
    s_idx, pos = seqs.target_index()
    rng = np.random.default_rng([seed, epoch]) if shuffle else None
    for b in _bucketed_order(pos, batch_size, rng, bucket):
        yield batcher.prefix_batch(s_idx[b], pos[b])


def sequence_batches(seqs: SequenceSet, batch_size: int, shuffle: bool = False, seed: int = 0,
                     bucket: bool = True, features=("items",), epoch: int = 0):
    """Yields prefix-parallel ``(features, targets[B, T])`` batches over sequences
    that have at least one target."""
    batcher = Batcher(seqs, features)
    keep = np.flatnonzero(seqs.lengths > seqs.target_start)
    rng = np.random.default_rng([seed, epoch]) if shuffle else None
    for b in _bucketed_order(seqs.lengths[keep], batch_size, rng, bucket):
        yield batcher.sequence_batch(keep[b])


def session_parallel_batches(seqs: SequenceSet, batch_size: int, shuffle: bool = False,
                             seed: int = 0, epoch: int = 0, drop_last: bool = False):
    """GRU4Rec's session-parallel mini-batches.

    ``batch_size`` lanes each take the next sequence when their current one ends.
    Each step yields ``(inputs[B], targets[B], reset[B], valid[B])``: ``inputs`` is
    an event, ``targets`` the event after it in the same sequence, ``reset`` is
    True where the lane's input is the first event of a new sequence (the hidden
    state must be zeroed *before* this step), and ``valid`` marks lanes that still
    hold a sequence (at the end of the data some lanes run dry; their rows are 0).
    Sequences shorter than 2 are skipped. Only ``drop_last=True`` reproduces the
    original behaviour of stopping when the first lane runs dry.

    Example:

    >>> s = SequenceSet.from_lists([[1, 2, 3], [4, 5], [6, 7]])
    >>> steps = list(session_parallel_batches(s, 2))
    >>> [(i.tolist(), t.tolist(), r.tolist()) for i, t, r, v in steps]
    [([1, 4], [2, 5], [True, True]), ([2, 6], [3, 7], [False, True])]
    """
    keep = np.flatnonzero(seqs.lengths >= 2)
    if shuffle:
        keep = keep[np.random.default_rng([seed, epoch]).permutation(len(keep))]
    starts = seqs.offsets[keep]
    ends = seqs.offsets[keep + 1]
    items = seqs.items
    nxt = 0
    lane_seq = np.full(batch_size, -1, np.int64)
    lane_pos = np.zeros(batch_size, np.int64)
    reset = np.zeros(batch_size, bool)
    for lane in range(batch_size):
        if nxt < len(keep):
            lane_seq[lane], lane_pos[lane], reset[lane] = nxt, starts[nxt], True
            nxt += 1
    while True:
        valid = lane_seq >= 0
        if not valid.any() or (drop_last and not valid.all()):
            return
        inp = np.where(valid, items[np.where(valid, lane_pos, 0)], 0).astype(np.int32)
        tgt = np.where(valid, items[np.where(valid, lane_pos + 1, 0)], 0).astype(np.int32)
        yield inp, tgt, reset.copy(), valid.copy()
        reset[:] = False
        lane_pos[valid] += 1
        for lane in np.flatnonzero(valid):
            if lane_pos[lane] + 1 >= ends[lane_seq[lane]]:
                if nxt < len(keep):
                    lane_seq[lane], lane_pos[lane], reset[lane] = nxt, starts[nxt], True
                    nxt += 1
                else:
                    lane_seq[lane] = -1


def to_tf_dataset(make_iter: Callable[[int], Iterator], example, prefetch: int = 2,
                  num_batches: Optional[int] = None):
    """Wraps a per-epoch batch generator ``make_iter(epoch)`` as a ``tf.data.Dataset``.

    Each pass over the dataset (each Keras epoch) calls ``make_iter`` with the next
    epoch number, so shuffling differs per epoch yet is deterministic per seed.
    ``example`` is one batch, used to derive the output signature (batch and time
    dimensions are left unknown). ``num_batches`` (batches per epoch) lets Keras
    show a progress bar with a known length.
    """
    import tensorflow as tf

    def spec(a):
        a = np.asarray(a)
        shape = (None,) * a.ndim
        return tf.TensorSpec(shape=shape, dtype=tf.as_dtype(a.dtype))

    signature = tf.nest.map_structure(spec, example)
    counter = {"epoch": 0}

    def gen():
        e = counter["epoch"]
        counter["epoch"] += 1
        yield from make_iter(e)

    ds = tf.data.Dataset.from_generator(gen, output_signature=signature)
    if num_batches is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(num_batches)))
    return ds.prefetch(prefetch).with_options(generator_options())


def generator_options():
    """``tf.data.Options`` for tfrec's generator pipelines: tf.data autotuning off.

    The pipelines have nothing to tune (one Python generator and a fixed prefetch).
    With autotuning on, destroying an iterator (Keras opens one per epoch) may wait
    until tf.data's autotune thread wakes from its sleep (TF 2.21:
    ``RootDataset::Iterator::~Iterator`` blocked on the ``Model::OptimizeLoop``
    thread): idle stalls of 2-36 s at the end of a ``fit`` on CiteULike, and idle
    stretches of up to 56 s in a running HCRNN training.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def num_prefix_batches(seqs: SequenceSet, batch_size: int) -> int:
    return -(-seqs.num_targets // batch_size)


def num_sequence_batches(seqs: SequenceSet, batch_size: int) -> int:
    return -(-int((seqs.lengths > seqs.target_start).sum()) // batch_size)
