"""User -> sessions -> events layouts for hierarchical (session-level) models such as HNVM.

Sessions are cut by inactivity and capped in length:

* a new session starts at a sequence's first event and after more than ``gap``
  seconds without an event (``delta > gap``);
* a burst longer than ``max_session_length`` events is cut into consecutive chunks
  of ``max_session_length`` (MovieLens users rate dozens of movies in one sitting;
  without the cap most users would have a single session).

The same rule exists twice: in numpy (:func:`session_index`, for building training
batches and splits) and in-graph (:func:`history_to_sessions`, so a model can score
a plain right-padded history ``{"items", "deltas"}`` from the evaluator or a
SavedModel). ``tests/test_hnvm.py`` checks that both agree.

Session-level batches (:func:`session_batches`) hold one *target session* per row with
the ``max_context_sessions`` sessions before it, right-aligned (most recent session in
the last slot, empty slots first)::

    x["context"]       int32 [B, C, S]  earlier sessions (0 = padding)
    x["session"]       int32 [B, S]     the target session s_n
    x["user"]          int32 [B]        user index
    x["num_sessions"]  float32 [B]      N_u, the user's number of training sessions
    y                  int32 [B, S]     = x["session"] (every item is a target)

The next-session task (Table 3 of the HNVM paper) holds out each user's last session
for test and the one before it for validation (:func:`next_session_dataset`), and is
scored with set metrics (:func:`set_ranking_metrics`, :func:`evaluate_next_session`).
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from tfrec.data.pipelines import sequence_deltas
from tfrec.data.schema import SequenceDataset, SequenceSet

#: default inactivity gap (one hour) and length cap of a session.
DEFAULT_GAP = 3600.0
DEFAULT_MAX_SESSION_LENGTH = 10


# ------------------------------------------------------------------ numpy rule
def session_index(deltas: np.ndarray, gap: float = DEFAULT_GAP,
                  max_session_length: int = DEFAULT_MAX_SESSION_LENGTH) -> Tuple[np.ndarray, np.ndarray]:
    """Session id (0-based) and position in the session of each event of ONE sequence.

    Args:
        deltas: seconds since the previous event (``inf`` or anything ``> gap`` at 0).
        gap: inactivity threshold in seconds.
        max_session_length: cap; longer bursts are cut into chunks of this length.

    Example:

    >>> sid, pos = session_index(np.array([np.inf, 5, 5, 9000, 1]), gap=3600, max_session_length=2)
    >>> sid.tolist(), pos.tolist()
    ([0, 0, 1, 2, 2], [0, 1, 0, 0, 1])
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    n = len(deltas)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = deltas > gap
    start[0] = True
    gid = np.cumsum(start) - 1
    first = np.flatnonzero(start)[gid]
    pos_gap = np.arange(n) - first
    start2 = start | (pos_gap % max_session_length == 0)
    return np.cumsum(start2) - 1, pos_gap % max_session_length


def split_sessions(items: np.ndarray, deltas: np.ndarray, gap: float = DEFAULT_GAP,
                   max_session_length: int = DEFAULT_MAX_SESSION_LENGTH):
    """One sequence as a list of sessions (arrays of items)."""
    sid, _ = session_index(deltas, gap, max_session_length)
    if len(sid) == 0:
        return []
    cuts = np.flatnonzero(np.diff(sid)) + 1
    return np.split(np.asarray(items), cuts)


def _context_block(sessions, k: int, C: int, S: int) -> np.ndarray:
    out = np.zeros((C, S), np.int32)
    prev = sessions[max(0, k - C):k]
    for j, s in enumerate(prev):
        out[C - len(prev) + j, : len(s)] = s
    return out


def user_sessions(seqs: SequenceSet, gap: float = DEFAULT_GAP,
                  max_session_length: int = DEFAULT_MAX_SESSION_LENGTH):
    """Every sequence of ``seqs`` as a list of sessions (list of lists of arrays)."""
    d = sequence_deltas(seqs) if seqs.times is not None else None
    out = []
    for s in range(len(seqs)):
        a, b = seqs.offsets[s], seqs.offsets[s + 1]
        dd = d[a:b] if d is not None else np.concatenate([[np.inf], np.zeros(b - a - 1)])
        out.append(split_sessions(seqs.items[a:b], dd, gap, max_session_length))
    return out


class SessionLayout:
    """Session-level samples of a :class:`SequenceSet` (one row per session).

    Args:
        seqs: the training split (one sequence per user, with ``times``).
        gap, max_session_length: the session rule.
        max_context_sessions: ``C``, how many earlier sessions a row carries.

    Example:

    >>> s = SequenceSet.from_lists([[1, 2, 3]], times=[[0.0, 1.0, 9000.0]], users=[1])
    >>> lay = SessionLayout(s, gap=3600, max_session_length=5, max_context_sessions=2)
    >>> x, y = lay.batch(np.array([1]))
    >>> x["context"].tolist(), y.tolist()
    ([[[0, 0, 0, 0, 0], [1, 2, 0, 0, 0]]], [[3, 0, 0, 0, 0]])
    """

    def __init__(self, seqs: SequenceSet, gap: float = DEFAULT_GAP,
                 max_session_length: int = DEFAULT_MAX_SESSION_LENGTH, max_context_sessions: int = 10):
        self.S, self.C = int(max_session_length), int(max_context_sessions)
        self.sessions = user_sessions(seqs, gap, max_session_length)
        users = seqs.users if seqs.users is not None else np.zeros(len(seqs), np.int32)
        rows = [(u, k) for u, ss in enumerate(self.sessions) for k in range(len(ss))]
        self.row_seq = np.array([r[0] for r in rows], np.int64)
        self.row_session = np.array([r[1] for r in rows], np.int64)
        self.row_user = users[self.row_seq].astype(np.int32) if len(rows) else np.zeros(0, np.int32)
        self.num_sessions = np.array([len(ss) for ss in self.sessions], np.float32)
        self.row_length = np.array([len(self.sessions[u][k]) for u, k in rows], np.int64)

    def __len__(self) -> int:
        return len(self.row_seq)

    def batch(self, rows: np.ndarray):
        B = len(rows)
        ctx = np.zeros((B, self.C, self.S), np.int32)
        ses = np.zeros((B, self.S), np.int32)
        for i, r in enumerate(rows):
            ss = self.sessions[self.row_seq[r]]
            k = self.row_session[r]
            ctx[i] = _context_block(ss, k, self.C, self.S)
            ses[i, : len(ss[k])] = ss[k]
        x = {"context": ctx, "session": ses, "user": self.row_user[rows],
             "num_sessions": self.num_sessions[self.row_seq[rows]]}
        return x, ses.copy()

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                epoch: int = 0) -> Iterator[Tuple[Dict[str, np.ndarray], np.ndarray]]:
        """Session-level mini-batches (eq. 19): rows are sessions from any users."""
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(len(self))
        for a in range(0, len(order), batch_size):
            yield self.batch(order[a : a + batch_size])


def session_batches(seqs: SequenceSet, batch_size: int, shuffle: bool = False, seed: int = 0,
                    epoch: int = 0, gap: float = DEFAULT_GAP,
                    max_session_length: int = DEFAULT_MAX_SESSION_LENGTH, max_context_sessions: int = 10):
    """Session-level ``(x, y)`` batches of ``seqs``; see the module docstring."""
    lay = SessionLayout(seqs, gap, max_session_length, max_context_sessions)
    return lay.batches(batch_size, shuffle, seed, epoch)


def user_layout(sessions, S: int) -> np.ndarray:
    """All sessions of one user as ``[N, S]`` (for sequence-level bounds)."""
    out = np.zeros((len(sessions), S), np.int32)
    for k, s in enumerate(sessions):
        out[k, : len(s)] = s
    return out


# ----------------------------------------------------------- in-graph rule
def history_to_sessions(items, deltas, gap: float = DEFAULT_GAP,
                        max_session_length: int = DEFAULT_MAX_SESSION_LENGTH,
                        max_context_sessions: int = 10, new_session: bool = False, next_delta=None):
    """In-graph: right-padded histories -> (context ``[B, C, S]``, current ``[B, S]``).

    The next (unseen) event is placed after the history with ``delta = 0``
    (continuing the last session; it still opens a new chunk when the last session
    is full), with ``new_session=True`` ``delta = inf``, or, given ``next_delta``,
    with that gap (the time from the last history event to the request, known at
    serving time: a gap ``> gap`` opens a new session). ``current`` holds the
    items of the session the next event belongs to (empty for a new session) and
    ``context`` the ``C`` sessions before it, right-aligned as in
    :class:`SessionLayout`.

    Args:
        items: int ``[B, T]`` right-padded with 0.
        deltas: float ``[B, T]`` seconds since the previous event (``inf`` at 0).
        new_session: force a new session for the next event (ignored with ``next_delta``).
        next_delta: optional float ``[B]`` seconds from the last history event to
            the next event.
    """
    import tensorflow as tf

    S, C = int(max_session_length), int(max_context_sessions)
    items = tf.cast(items, tf.int32)
    deltas = tf.cast(deltas, tf.float32)
    B = tf.shape(items)[0]
    T = tf.shape(items)[1]
    valid = items != 0
    L = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
    # append the next event (dummy) at position L of each row
    Te = T + 1
    pos = tf.range(Te)[None, :]
    d_ext = tf.concat([deltas, tf.zeros([B, 1])], axis=1)
    if next_delta is None:
        nxt = tf.fill([B], np.inf if new_session else 0.0)
    else:
        nxt = tf.reshape(tf.cast(next_delta, tf.float32), [B])
    d_ext = tf.where(pos == L[:, None], nxt[:, None], d_ext)
    real = pos <= L[:, None]  # history + dummy
    start = ((d_ext > gap) | (pos == 0)) & real
    gid = tf.cumsum(tf.cast(start, tf.int32), axis=1) - 1
    # first index of each gap-session via a segment min over (row, gap-session)
    seg = tf.range(B)[:, None] * Te + tf.maximum(gid, 0)
    big = tf.fill([B, Te], Te)
    first_of = tf.math.unsorted_segment_min(tf.reshape(tf.where(real, tf.broadcast_to(pos, [B, Te]), big), [-1]),
                                            tf.reshape(seg, [-1]), B * Te)
    first = tf.reshape(tf.gather(first_of, tf.reshape(seg, [-1])), [B, Te])
    pos_gap = pos - first
    start2 = (start | (tf.math.floormod(pos_gap, S) == 0)) & real
    sid = tf.cumsum(tf.cast(start2, tf.int32), axis=1) - 1
    spos = tf.math.floormod(pos_gap, S)
    cur = tf.gather(sid, L, batch_dims=1)  # [B] session of the next event
    hist = pos < L[:, None]
    slot = sid - cur[:, None] + C  # 0..C-1 for the C sessions before cur
    in_ctx = hist & (slot >= 0) & (slot < C)
    in_cur = hist & (sid == cur[:, None])
    rows = tf.broadcast_to(tf.range(B)[:, None], [B, Te])
    it_ext = tf.concat([items, tf.zeros([B, 1], tf.int32)], axis=1)
    ci = tf.stack([tf.boolean_mask(rows, in_ctx), tf.boolean_mask(slot, in_ctx),
                   tf.boolean_mask(spos, in_ctx)], axis=1)
    context = tf.scatter_nd(ci, tf.boolean_mask(it_ext, in_ctx), tf.stack([B, C, S]))
    ui = tf.stack([tf.boolean_mask(rows, in_cur), tf.boolean_mask(spos, in_cur)], axis=1)
    current = tf.scatter_nd(ui, tf.boolean_mask(it_ext, in_cur), tf.stack([B, S]))
    return context, current


# ------------------------------------------------------- next-session task
def next_session_dataset(data: SequenceDataset, gap: float = DEFAULT_GAP,
                         max_session_length: int = DEFAULT_MAX_SESSION_LENGTH,
                         min_sessions: int = 3) -> SequenceDataset:
    """Next-session task: each user's last session is the test target set, the
    session before it the validation set, the rest training (HNVM §5.4).

    Full user sequences are taken from ``data.test`` (a leave-last-out or full
    split holds every event). Users with fewer than ``min_sessions`` sessions are
    dropped. ``valid``/``test`` are prefix-style :class:`SequenceSet` s whose
    targets are exactly the held-out session's events (``target_start`` = its
    first position), so next-item models can also be validated on them.
    """
    full = data.test
    d = sequence_deltas(full)
    keep, cut_v, cut_t = [], [], []
    for s in range(len(full)):
        a, b = full.offsets[s], full.offsets[s + 1]
        sid, _ = session_index(d[a:b], gap, max_session_length)
        n = int(sid[-1]) + 1 if len(sid) else 0
        if n < min_sessions:
            continue
        keep.append(s)
        cut_t.append(int(np.searchsorted(sid, n - 1)))
        cut_v.append(int(np.searchsorted(sid, n - 2)))
    keep = np.array(keep, np.int64)
    sub = full.subset(keep)
    cut_v, cut_t = np.array(cut_v, np.int64), np.array(cut_t, np.int64)
    L = sub.lengths.astype(np.int64)

    def trunc(ends, starts):
        ev = np.concatenate([np.arange(sub.offsets[i], sub.offsets[i] + ends[i]) for i in range(len(sub))])
        pick = lambda a: None if a is None else a[ev]  # noqa: E731
        return SequenceSet(sub.items[ev], np.concatenate([[0], np.cumsum(ends)]), np.maximum(starts, 1),
                           pick(sub.times), pick(sub.values), sub.users, sub.sequence_ids)

    train = trunc(cut_v, np.ones(len(sub), np.int64))
    valid = trunc(cut_t, cut_v)
    test = trunc(L, cut_t)
    return SequenceDataset(train, valid, test, item_vocab=data.item_vocab, user_vocab=data.user_vocab,
                           item_features=data.item_features, user_features=data.user_features,
                           feature_names=data.feature_names,
                           name=f"{data.name} next-session gap={gap:g}s cap={max_session_length}")


def set_ranking_metrics(scores: np.ndarray, target_sets: Sequence[np.ndarray], ks=(5,),
                        exclude: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Recall/MRR/Precision@K of a top-K list against a *set* of targets per row.

    ``recall@K = |top-K ∩ T| / |T|``, ``precision@K = |top-K ∩ T| / K``,
    ``mrr@K`` = reciprocal rank of the first target in the top-K (0 if none);
    averaged over rows. Ties are broken against the model (a target tied with a
    non-target ranks below it). ``exclude`` is a bool ``[B, N]`` of non-candidates
    (e.g. the padding column 0).

    Example:

    >>> s = np.array([[0.0, 0.9, 0.8, 0.1, 0.7]])
    >>> m = set_ranking_metrics(s, [np.array([2, 3])], ks=[2])
    >>> m["recall@2"], m["precision@2"], m["mrr@2"]
    (0.5, 0.5, 0.5)
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    B, N = scores.shape
    if exclude is None:
        cand = np.ones((B, N), bool)
        cand[:, 0] = False
    else:
        cand = ~np.broadcast_to(np.asarray(exclude, bool), (B, N))
    tgt = np.zeros((B, N), bool)
    for b, t in enumerate(target_sets):
        tgt[b, np.asarray(t, np.int64)] = True
    scores[~cand & ~tgt] = -np.inf
    # conservative ties: sort by score desc, non-targets first among equals
    order = np.lexsort((tgt.astype(np.int8), -scores), axis=-1)
    out = {}
    ntgt = np.maximum(tgt.sum(1), 1)
    for k in ks:
        top = order[:, :k]
        hits = np.take_along_axis(tgt, top, axis=1)
        nh = hits.sum(1)
        first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
        out[f"recall@{k}"] = float(np.mean(nh / ntgt))
        out[f"precision@{k}"] = float(np.mean(nh / k))
        out[f"mrr@{k}"] = float(np.mean(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)))
    return out


def next_session_inputs(seqs: SequenceSet, features=("items",)):
    """Histories before each held-out session and the target sets (for
    :func:`evaluate_next_session`)."""
    from tfrec.data.pipelines import Batcher

    b = Batcher(seqs, features)
    idx = np.arange(len(seqs))
    x, _ = b.prefix_batch(idx, seqs.target_start.astype(np.int64))
    targets = [np.unique(seqs.sequence(s)[seqs.target_start[s]:]) for s in idx]
    return x, targets


def evaluate_next_session(model, seqs: SequenceSet, ks=(5, 20), batch_size: int = 256) -> Dict[str, float]:
    """Set metrics of ``model`` on the next-session task: one score vector per user
    from the history before the held-out session, against all its items.

    A model with ``score_next_session_batch`` (HNVM: decode a new session) uses it;
    any other :class:`~tfrec.models.base.Recommender` is scored with
    ``score_prefix_batch`` (its next-item scores after the history).
    """
    feats = tuple(getattr(model, "input_features", ("items",)))
    x, targets = next_session_inputs(seqs, feats)
    fn = getattr(model, "score_next_session_batch", None) or model.score_prefix_batch
    res = []
    for a in range(0, len(targets), batch_size):
        xb = {k: v[a : a + batch_size] for k, v in x.items()}
        T = int((xb["items"] != 0).sum(1).max())
        xb = {k: (v[:, :T] if v.ndim == 2 else v) for k, v in xb.items()}
        res.append(np.asarray(fn(xb), np.float32))
    scores = np.concatenate(res)
    out = set_ranking_metrics(scores, targets, ks)
    out["targets"] = int(sum(len(t) for t in targets))
    out["users"] = len(targets)
    return out
