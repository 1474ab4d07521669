"""HRNN-meta (Ma & Narayanaswamy) and its comparisons: HGRU, RNN, item-feature FM.

One Keras model, :class:`HRNNMeta`, covers the paper's ablations by flags:

* ``use_levels`` -- the hierarchy-control input (HRNN vs RNN). The level of step
  ``j`` is computed in-graph from the seconds between the event it reads and the
  event it predicts (``next_deltas``; for the last history event that is the time
  that will have passed at query time), so recommendations depend on the query
  time (Table 5).
* ``use_user_features`` / ``feedback`` -- user-feature and interaction-feedback
  embeddings concatenated to the cell input (:class:`~tfrec.layers.HRNNMetaCell`).
* ``use_item_features`` -- the FM-inspired decoder with randomised ``lam``
  (:class:`~tfrec.layers.FeatureMixDecoder`); items never seen in training are
  scored from their features alone (cold start).
* ``cell`` -- ``gru``, ``lstm``, ``simple`` or ``hgru`` (Quadrana et al. 2017,
  :class:`~tfrec.layers.HGRUCell`); ``temporal_conv`` -- a dilated causal
  convolution stack ``before`` or ``instead`` of the RNN.
* ``encoder`` -- ``rnn``; ``last_item_features`` (an FM over the last item's
  features and the candidate's features: the paper's "item features" baseline);
  ``none`` (popularity from the decoder bias).
* ``rating_weight > 0`` -- a rating head trained with MSE next to the softmax.

Training is TBPTT by default (``training_layout="tbptt"``): user histories are
concatenated, cut into ``lanes`` equal streams, and read in ``chunk``-step pieces
with the recurrent state carried from one batch to the next
(:mod:`tfrec.data.tbptt`). Every sequence starts with a begin-of-sequence step,
so the first item of a sequence is trained and can be scored
(:func:`stream_evaluate`). The carried states are replica-local lane state
(:class:`~tfrec.layers.LaneState`): under ``tf.distribute.MirroredStrategy`` each
replica keeps the carries of the lanes it receives (``lanes`` must be a multiple of
the number of replicas). They are transient: not saved with the model.

Also here: rating baselines (:class:`RollingAverageRating`, the mean of the
item and user average ratings; :class:`BiasedMFRating`, a factorization model)
and :func:`rating_rmse`.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import numpy as np
from keras import layers, ops

from tfrec.data.pipelines import to_tf_dataset
from tfrec.data.schema import SequenceDataset, SequenceSet
from tfrec.data.sessionize import DEFAULT_LEVEL_THRESHOLDS
from tfrec.data.tbptt import (
    build_stream, num_tbptt_batches, padded_stream_batch, padded_stream_batches, tbptt_batches,
)
from tfrec.layers.hrnn_meta import (
    FeatureMixDecoder, HGRUCell, HierarchyLevel, HRNNMetaCell, TemporalConvStack,
)
from tfrec.layers.state import lane_state, lane_states
from tfrec.metrics import ranks_from_scores
from tfrec.models import base as _base
from tfrec.models.base import SequentialRecommender, gather_last, lengths_of
from tfrec.models.registry import register

CELLS = ("gru", "lstm", "simple", "hgru")
ENCODERS = ("rnn", "last_item_features", "none")
CONVS = ("none", "before", "instead")
TRAINING_LAYOUTS = ("tbptt", "padded")
_NEG = -1e9


def _scale_for_replicas(loss):
    fn = getattr(_base, "scale_for_replicas", None)
    return fn(loss) if fn is not None else loss


def _global_mean(total, count):
    """``total / count`` with ``count`` summed over the replicas in sync (inside a
    replica of a multi-replica strategy): each replica's loss is its share of the
    global-batch mean, so the all-reduced gradients are the one-device gradients."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return ops.divide_no_nan(total, count)


def _inner_cell(kind: str, units: int):
    if kind == "gru":
        return layers.GRUCell(units)
    if kind == "lstm":
        return layers.LSTMCell(units)
    if kind == "simple":
        return layers.SimpleRNNCell(units)
    raise ValueError(f"cell must be one of {CELLS}, got {kind!r}")


@keras.saving.register_keras_serializable(package="tfrec")
class HRNNMeta(SequentialRecommender):
    """Hierarchical RNN with meta data (HRNN-meta) and its ablations.

    Args:
        num_items: item classes including padding 0 (index ``num_items`` is the
            begin-of-sequence input token).
        embedding_dim, hidden: item embedding and recurrent widths.
        cell: ``gru`` | ``lstm`` | ``simple`` | ``hgru``.
        encoder: ``rnn`` | ``last_item_features`` | ``none``.
        use_levels: feed the hierarchy-control embedding (HRNN); needs timestamps.
        level_thresholds: level boundaries in seconds (default 1 min, 1 h, 1 day).
        control_dim: width of the level embedding.
        num_users, user_cardinalities: shape of the user-feature table (filled by
            :meth:`from_dataset`; 0/empty: no user features).
        user_embedding_dim, user_proj_dim: per-feature embedding width and the
            dimension-reduced width fed to the cell.
        feedback, feedback_dim: embed the standardised value (rating/outcome) of
            each history event.
        value_mean, value_std: standardisation of values (from training data).
        item_feature_dim: width of the item-feature table (0: ids only).
        id_factors: decoder learns per-item factors ``w_j`` (False: bias only).
        feature_hidden: hidden width of the feature embedding ``w(f)`` (0: linear).
        feature_inputs: also mix feature embeddings into the *input* item
            embedding with the same ``lam`` scheme (cold items in histories).
        lambda_train, lambda_eval: see :class:`~tfrec.layers.FeatureMixDecoder`.
        temporal_conv, conv_layers, conv_kernel: dilated causal convolutions
            ``before`` or ``instead`` of the RNN (``padded`` layout only).
        rating_weight: weight of the rating MSE (0: no rating head).
        rating_dim: width of the rating head's item factors.
        training_layout: ``tbptt`` (concatenated histories, carried state) or
            ``padded`` (one user per row, zero initial state).
        lanes, chunk: TBPTT streams per batch and steps per chunk.
        first_targets: train on the first item of each sequence (predicted from
            the begin-of-sequence step).
        dropout: dropout on the representation before decoding.
        session_level: HGRU only: smallest level that starts a session.
        batch_size: rows per batch in the ``padded`` layout.

    Example:

    >>> from tfrec.data import simulate_sessions
    >>> data = simulate_sessions(num_users=50)
    >>> m = HRNNMeta.from_dataset(data, hidden=8, embedding_dim=8, lanes=4, chunk=5)
    >>> m.compile(optimizer="adam"); _ = m.fit(data, epochs=1, verbose=0)  # doctest: +SKIP
    """

    causal = True
    probabilistic = True

    def __init__(self, num_items: int, embedding_dim: int = 32, hidden: int = 64, cell: str = "gru",
                 encoder: str = "rnn", use_levels: bool = True,
                 level_thresholds: Sequence[float] = DEFAULT_LEVEL_THRESHOLDS, control_dim: int = 8,
                 num_users: int = 0, user_cardinalities: Sequence[int] = (), user_embedding_dim: int = 8,
                 user_proj_dim: int = 16, feedback: bool = False, feedback_dim: int = 4,
                 value_mean: float = 0.0, value_std: float = 1.0, item_feature_dim: int = 0,
                 id_factors: bool = True, feature_hidden: int = 0, feature_inputs: bool = False,
                 lambda_train: Optional[float] = None, lambda_eval: float = 0.5,
                 temporal_conv: str = "none", conv_layers: int = 2, conv_kernel: int = 3,
                 rating_weight: float = 0.0, rating_dim: int = 16, training_layout: str = "tbptt",
                 lanes: int = 32, chunk: int = 20, first_targets: bool = True, dropout: float = 0.0,
                 session_level: int = 2, layout: str = "sequence", batch_size: int = 64,
                 bucket: bool = True, seed: int = 0, **kwargs):
        super().__init__(num_items=num_items, layout=layout, batch_size=batch_size, bucket=bucket,
                         seed=seed, **kwargs)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if temporal_conv not in CONVS:
            raise ValueError(f"temporal_conv must be one of {CONVS}, got {temporal_conv!r}")
        if training_layout not in TRAINING_LAYOUTS:
            raise ValueError(f"training_layout must be one of {TRAINING_LAYOUTS}, got {training_layout!r}")
        if temporal_conv != "none" and training_layout == "tbptt":
            raise ValueError("temporal_conv does not carry its receptive field across TBPTT chunks; "
                             "use training_layout='padded'")
        if cell == "hgru" and temporal_conv != "none":
            raise ValueError("HGRU cannot be combined with temporal_conv")
        self.embedding_dim, self.hidden = int(embedding_dim), int(hidden)
        self.cell_kind, self.encoder = cell, encoder
        self.use_levels = bool(use_levels)
        self.level_thresholds = [float(t) for t in level_thresholds]
        self.control_dim = int(control_dim)
        self.num_users = int(num_users)
        self.user_cardinalities = [int(c) for c in user_cardinalities]
        self.user_embedding_dim, self.user_proj_dim = int(user_embedding_dim), int(user_proj_dim)
        self.feedback, self.feedback_dim = bool(feedback), int(feedback_dim)
        self.value_mean, self.value_std = float(value_mean), float(value_std) or 1.0
        self.item_feature_dim = int(item_feature_dim)
        self.id_factors, self.feature_hidden = bool(id_factors), int(feature_hidden)
        self.feature_inputs = bool(feature_inputs) and self.item_feature_dim > 0
        self.lambda_train = None if lambda_train is None else float(lambda_train)
        self.lambda_eval = float(lambda_eval)
        self.temporal_conv, self.conv_layers, self.conv_kernel = temporal_conv, int(conv_layers), int(conv_kernel)
        self.rating_weight, self.rating_dim = float(rating_weight), int(rating_dim)
        self.training_layout, self.lanes, self.chunk = training_layout, int(lanes), int(chunk)
        self.first_targets = bool(first_targets)
        self.dropout_rate = float(dropout)
        self.session_level = int(session_level)
        self.bos = self.num_items
        self.has_users = self.num_users > 0 and len(self.user_cardinalities) > 0

        feats = ["items"]
        if self.use_levels:
            # next_deltas drive the control; deltas (+ optional query_deltas) are the
            # fallback when a caller only has timestamps (e.g. an exported graph)
            feats += ["next_deltas", "deltas"]
        if self.feedback:
            feats.append("values")
        if self.has_users:
            feats.append("user")
        self.input_features = tuple(feats)

        # --- inputs
        self.item_embedding = (layers.Embedding(self.num_items + 1, self.embedding_dim, name="item_embedding")
                               if encoder == "rnn" else None)
        self.levels = HierarchyLevel(self.level_thresholds, name="hierarchy_level")
        if self.has_users:
            self.user_table = self.add_weight(shape=(self.num_users, len(self.user_cardinalities)),
                                              initializer="zeros", trainable=False, name="user_feature_table")
            self.user_embeddings = [layers.Embedding(c, self.user_embedding_dim, name=f"user_feature_{i}")
                                    for i, c in enumerate(self.user_cardinalities)]
        self.decoder = FeatureMixDecoder(self.num_items, self.item_feature_dim,
                                         id_factors=self.id_factors and encoder != "none",
                                         feature_hidden=self.feature_hidden, lambda_train=self.lambda_train,
                                         lambda_eval=self.lambda_eval, name="decoder")
        self.decoder.build((None, self.hidden))
        if self.feature_inputs:
            self.feature_input_projection = layers.Dense(self.embedding_dim, name="feature_input_projection")
        # --- encoder
        user_dim = len(self.user_cardinalities) * self.user_embedding_dim if self.has_users else 0
        if encoder == "rnn":
            if cell == "hgru":
                self.cell = HGRUCell(self.hidden, self.embedding_dim, session_level=self.session_level,
                                     first_level=len(self.level_thresholds) + 1, name="hgru_cell")
            else:
                self.cell = HRNNMetaCell(_inner_cell(cell, self.hidden), item_dim=self.embedding_dim,
                                         num_levels=self.levels.num_levels if self.use_levels else 0,
                                         control_dim=self.control_dim, user_dim=user_dim,
                                         user_proj_dim=self.user_proj_dim, feedback=self.feedback,
                                         feedback_dim=self.feedback_dim, name="hrnn_meta_cell")
            if temporal_conv != "instead":
                self.rnn = layers.RNN(self.cell, return_sequences=True, return_state=True, name="rnn")
            if temporal_conv == "before":
                self.conv = TemporalConvStack(self.embedding_dim, self.conv_layers, self.conv_kernel,
                                              name="temporal_conv")
            elif temporal_conv == "instead":
                self.conv = TemporalConvStack(self.hidden, self.conv_layers, self.conv_kernel,
                                              name="temporal_conv")
        elif encoder == "last_item_features":
            if not self.item_feature_dim:
                raise ValueError("encoder='last_item_features' needs item features")
            self.fm_projection = layers.Dense(self.hidden, name="fm_projection")
        self.dropout = layers.Dropout(self.dropout_rate)
        if self.rating_weight > 0:
            self.rating_item_bias = layers.Embedding(self.num_items, 1, embeddings_initializer="zeros",
                                                     name="rating_item_bias")
            self.rating_item_factors = layers.Embedding(self.num_items, self.rating_dim, name="rating_item_factors")
            self.rating_projection = layers.Dense(self.rating_dim, name="rating_projection")
        # --- TBPTT carried state (one row per lane), replica-local under tf.distribute:
        # each replica keeps the rows of the lanes it receives (tfrec.layers.state)
        # (not Keras weights: left out of .keras files and checkpoints; see ``carry``)
        if training_layout == "tbptt" and encoder == "rnn":
            for i, size in enumerate(self._carry_sizes()):
                lane_state(self, (size,), f"tbptt_carry_{i}", batch_size=self.lanes)

    @property
    def carry(self):
        """The TBPTT lane states (:class:`~tfrec.layers.LaneState`, one per cell
        state; empty unless ``training_layout="tbptt"`` with the RNN encoder).
        ``carry[i].numpy()`` is the global ``[lanes, size]`` state."""
        return lane_states(self)

    def _carry_sizes(self):
        sizes = self.cell.state_size
        return [int(d) for d in (sizes if isinstance(sizes, (list, tuple)) else [sizes])]

    def load_own_variables(self, store):
        # .keras files written before the TBPTT carry became replica-local lane state
        # hold it as trailing weights of the model; the carry is transient: drop them
        n = len(self._trainable_variables) + len(self._non_trainable_variables)
        if self.carry and len(store.keys()) == n + len(self.carry):
            store = {str(i): store[str(i)] for i in range(n)}
        super().load_own_variables(store)

    def build_from_config(self, config):
        # a TBPTT batch's ``reset`` key makes the call use the lane carry, whose rows
        # are one replica's lanes (a model built under MirroredStrategy records the
        # per-replica batch): rebuild without it, which works for any batch size
        shapes = (config or {}).get("input_shape")
        if isinstance(shapes, dict) and "reset" in shapes:
            config = dict(config, input_shape={k: v for k, v in shapes.items() if k != "reset"})
        super().build_from_config(config)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_dataset(cls, data: SequenceDataset, use_user_features: bool = False,
                     use_item_features: bool = False, **config):
        """Builds the model for ``data``: fills feature tables, value statistics and
        the seen-in-training mask. Features/times the data lacks are switched off."""
        cfg = dict(config)
        train = data.train
        if train.times is None and cfg.get("use_levels", True):
            cfg["use_levels"] = False
        user_table = None
        if use_user_features and data.user_features and train.users is not None:
            names = sorted(data.user_features)
            user_table = np.stack([np.asarray(data.user_features[n]).astype(np.int64).reshape(-1)
                                   for n in names], 1)
            cfg["num_users"] = int(user_table.shape[0])
            cfg["user_cardinalities"] = [int(user_table[:, i].max()) + 1 for i in range(user_table.shape[1])]
        item_table = None
        if use_item_features and data.item_features:
            parts = [np.asarray(data.item_features[n], np.float32).reshape(data.num_items, -1)
                     for n in sorted(data.item_features)]
            item_table = np.concatenate(parts, 1)
            norm = np.linalg.norm(item_table, axis=1, keepdims=True)
            item_table = item_table / np.maximum(norm, 1e-12)  # L2-normalised rows (paper §3)
            cfg["item_feature_dim"] = int(item_table.shape[1])
        if train.values is None:
            cfg["feedback"] = False
            cfg["rating_weight"] = 0.0
        elif cfg.get("feedback") or cfg.get("rating_weight"):
            cfg.setdefault("value_mean", float(train.values.mean()))
            cfg.setdefault("value_std", float(train.values.std()) or 1.0)
        model = cls(num_items=data.num_items, **cfg)
        counts = train.item_counts(data.num_items)
        model.set_tables(user_table=user_table, item_table=item_table, seen=counts > 0, counts=counts)
        return model

    def set_tables(self, user_table=None, item_table=None, seen=None, counts=None):
        """Assigns the feature tables and the seen-in-training item mask; ``counts``
        (training item counts) initialise the decoder's id bias at log-popularity."""
        if counts is not None:
            logp = np.log((np.asarray(counts, np.float64) + 1.0) / (np.sum(counts) + len(counts)))
            self.decoder.b.assign((logp - logp.mean()).astype(np.float32))
        if user_table is not None and self.has_users:
            self.user_table.assign(np.asarray(user_table, np.float32))
        if self.item_feature_dim:
            if item_table is not None:
                self.decoder.item_features.assign(np.asarray(item_table, np.float32))
            if seen is not None:
                self.decoder.seen.assign(np.asarray(seen, np.float32))

    # ------------------------------------------------------------ networks
    def _stream_from_pipeline(self, x):
        """Pipeline batch (``items`` = history) -> stream inputs with a BOS step.

        The control of each step comes from ``next_deltas`` (gap from each event to
        the next; the last entry is the query gap). Without it, ``deltas`` (gap to
        the previous event) shifted by one are used, with the query gap taken from
        ``query_deltas`` ``[B]`` (seconds; 0 when absent)."""
        items = ops.cast(x["items"], "int32")
        B, T = ops.shape(items)[0], ops.shape(items)[1]
        ones = ops.ones((B, 1), "int32")
        s = {"s_items": ops.concatenate([ones * self.bos, items], axis=1)}
        nxt = None
        if "next_deltas" in x:
            nxt = ops.cast(x["next_deltas"], "float32")
        elif "deltas" in x:
            # previous-event deltas shifted left; the last history event gets the query
            # gap (``query_deltas`` [B], default 0 = "continuing the session")
            d = ops.cast(x["deltas"], "float32")
            shifted = ops.concatenate([d[:, 1:], ops.zeros((B, 1))], axis=1)
            q = ops.cast(ops.reshape(x["query_deltas"], (-1, 1)), "float32") if "query_deltas" in x \
                else ops.zeros((B, 1))
            last = ops.expand_dims(lengths_of(items) - 1, 1)
            nxt = ops.where(ops.equal(ops.expand_dims(ops.arange(T), 0), last), q, shifted)
        if nxt is not None:
            inf = ops.full((B, 1), float("inf"), "float32")
            s["s_deltas"] = ops.concatenate([inf, nxt], axis=1)
        if "values" in x:
            s["s_values"] = ops.concatenate([ops.zeros((B, 1)), ops.cast(x["values"], "float32")], axis=1)
        if "user" in x:
            u = ops.cast(ops.reshape(x["user"], (-1, 1)), "int32")
            s["s_user"] = ops.broadcast_to(u, (B, T + 1))
        return s

    def _item_feature_rows(self, items):
        idx = ops.where(ops.equal(items, self.bos), 0, items)
        return ops.take(ops.convert_to_tensor(self.decoder.item_features), idx, axis=0)

    def encode_stream(self, s, initial_state=None, training=False):
        """Stream inputs ``s_items [B, S]`` (+ ``s_deltas``, ``s_values``,
        ``s_user``) -> ``(h [B, S, H], final_states)``."""
        items = ops.cast(s["s_items"], "int32")
        if self.encoder == "none":
            h = ops.zeros(ops.shape(items) + (self.hidden,))
            return h, []
        if self.encoder == "last_item_features":
            return self.fm_projection(self._item_feature_rows(items)), []
        e = self._embed_stream(items, training)
        if self.temporal_conv == "before":
            e = e + self.conv(e, training=training)
        packed = self._pack_stream(s, items, e)
        if self.temporal_conv == "instead":
            return self.conv(self.cell.embed_inputs(packed), training=training), []
        out = self.rnn(packed, initial_state=initial_state, training=training)
        return out[0], list(out[1:])

    def _embed_stream(self, items, training=False):
        """Input embeddings of stream items ``[B, S]`` (the begin-of-sequence token
        included), mixed with the item-feature embedding when ``feature_inputs``."""
        is_bos = ops.equal(items, self.bos)
        e = self.item_embedding(items)
        if self.feature_inputs:
            ef = self.feature_input_projection(self._item_feature_rows(items))
            if training:
                lam = (keras.random.uniform(ops.shape(items), seed=self.decoder.seed_generator)
                       if self.lambda_train is None else self.lambda_train)
            else:
                seen = ops.take(ops.convert_to_tensor(self.decoder.seen), ops.where(is_bos, 0, items), axis=0)
                lam = seen * self.lambda_eval + (1.0 - seen)
            lam = ops.where(is_bos, 0.0, lam)
            lam = ops.cast(ops.expand_dims(lam, -1), e.dtype)
            e = (1.0 - lam) * e + lam * ef
        return e

    def _pack_stream(self, s, items, e):
        """The cell's per-step inputs ``[B, S, packed]``: embedding, level control
        (from ``s_deltas``), user vector and standardised feedback."""
        is_bos = ops.equal(items, self.bos)
        levels = None
        if self.use_levels or self.cell_kind == "hgru":
            if "s_deltas" in s:
                deltas = s["s_deltas"]
            else:  # no time information: only sequence starts are known
                deltas = ops.where(is_bos, float("inf"), ops.zeros_like(ops.cast(items, "float32")))
            levels = self.levels(deltas)
        if self.cell_kind == "hgru":
            return HRNNMetaCell.pack(e, levels)
        user_vec = None
        if self.has_users:
            rows = ops.take(ops.convert_to_tensor(self.user_table), ops.cast(s["s_user"], "int32"), axis=0)
            rows = ops.cast(rows, "int32")
            user_vec = ops.concatenate([emb(rows[..., i]) for i, emb in enumerate(self.user_embeddings)], -1)
        fb = None
        if self.feedback:
            z = (ops.cast(s["s_values"], "float32") - self.value_mean) / self.value_std
            fb = ops.where(ops.logical_or(is_bos, ops.equal(items, 0)), 0.0, z)
        return HRNNMetaCell.pack(e, levels if self.use_levels else None, user_vec, fb)

    # ------------------------------------------------- O(1) serving step
    @property
    def initial_state(self):
        """``initial_state(batch_size)`` for the O(1) serving :attr:`step`, or ``None``
        for configurations without one (``encoder`` other than ``"rnn"``, or a
        temporal convolution, whose receptive field is a window of events: export
        then gives them the bounded-window step)."""
        return self._initial_state if self._steppable else None

    @property
    def step(self):
        """``step(state, inputs) -> (logits [B, num_items], new_state)``: advances
        every session by one event (``inputs["items"]`` ``[B]``, with ``deltas`` = the
        gap in seconds since the session's previous event, ``values`` and ``user``
        when the model reads them); the logits equal :meth:`prefix_logits` of the
        whole history. ``None`` where the model has no O(1) step (see
        :attr:`initial_state`).

        The control signal of an event is the gap to the *next* event, so an event
        is committed to the recurrent state only when its successor arrives: the
        state holds the cell states up to the previous event plus that pending
        event; each step commits it under the new gap, then scores the new event
        with the query gap 0 (as ``prefix_logits`` does). Two cell steps per call.

        Example:

        >>> from tfrec.data import simulate_sessions
        >>> data = simulate_sessions(num_users=20)
        >>> m = HRNNMeta.from_dataset(data, hidden=8, embedding_dim=8)
        >>> st = m.initial_state(2)
        >>> logits, st = m.step(st, {"items": np.array([3, 5]), "deltas": np.array([np.inf, np.inf])})
        >>> tuple(logits.shape)
        (2, 26)
        """
        return self._step if self._steppable else None

    @property
    def _steppable(self) -> bool:
        return self.encoder == "rnn" and self.temporal_conv == "none"

    def _initial_state(self, batch_size):
        cells = [ops.zeros((batch_size, size), "float32") for size in self._carry_sizes()]
        return {"cells": cells, "pending_item": ops.full((batch_size,), self.bos, "int32"),
                "pending_value": ops.zeros((batch_size,), "float32")}

    def _cell_step(self, s, states):
        """One cell step on stream inputs of one position (``s_items`` ``[B]``, ...)."""
        s = {k: ops.expand_dims(v, 1) for k, v in s.items()}
        items = ops.cast(s["s_items"], "int32")
        packed = self._pack_stream(s, items, self._embed_stream(items))
        h, new = self.cell(packed[:, 0], [ops.cast(c, self.cell.compute_dtype) for c in states])
        return h, list(new) if isinstance(new, (list, tuple)) else [new]

    def _step(self, state, inputs, training=False):
        items = ops.cast(ops.reshape(inputs["items"], (-1,)), "int32")
        pending = ops.cast(state["pending_item"], "int32")
        fresh = ops.equal(pending, self.bos)
        prev = {"s_items": pending}
        new = {"s_items": items}
        if "deltas" in inputs:  # the gap to this event is the control of the pending one
            gap = ops.cast(ops.reshape(inputs["deltas"], (-1,)), "float32")
            prev["s_deltas"] = ops.where(fresh, float("inf"), gap)
            new["s_deltas"] = ops.zeros_like(gap)  # query gap 0, as prefix_logits
        values = ops.zeros(ops.shape(items), "float32")
        if self.feedback:
            values = ops.cast(ops.reshape(inputs["values"], (-1,)), "float32")
            prev["s_values"], new["s_values"] = ops.cast(state["pending_value"], "float32"), values
        if self.has_users:
            user = ops.cast(ops.reshape(inputs["user"], (-1,)), "int32")
            prev["s_user"] = new["s_user"] = user
        _, committed = self._cell_step(prev, state["cells"])
        h, _ = self._cell_step(new, committed)
        return self.decode(h, training=training), {
            "cells": [ops.cast(c, "float32") for c in committed], "pending_item": items,
            "pending_value": values}

    def decode(self, h, training=False, lam=None):
        logits = self.decoder(self.dropout(h, training=training), training=training, lam=lam)
        # scores (and so the softmax and the loss) stay float32 under mixed precision
        pad = ops.one_hot(ops.zeros((), "int32"), self.num_items) * _NEG
        return ops.cast(logits, "float32") + pad

    def rating_from_h(self, h, items):
        """Standardised rating prediction for ``items`` given the states ``h`` before them."""
        items = ops.cast(items, "int32")
        q = self.rating_item_factors(items)
        b = ops.squeeze(self.rating_item_bias(items), -1)
        return b + ops.sum(q * self.rating_projection(h), axis=-1)

    def stream_outputs(self, s, training=False):
        """``{"logits", "h"}`` for stream inputs; with a ``reset`` key the initial
        state comes from (and the final state goes to) the TBPTT carry."""
        init = None
        # outside a replica of a multi-replica strategy (e.g. Keras' symbolic build)
        # the batch is not one replica's lanes: start from zeros, keep the carry
        use_carry = "reset" in s and self.carry and self.carry[0].in_replica_context()
        if use_carry:
            init = [ops.cast(c.initial(s["reset"]), self.cell.compute_dtype) for c in self.carry]
        h, states = self.encode_stream(s, init, training=training)
        if use_carry:
            for c, st in zip(self.carry, states):
                c.assign(ops.stop_gradient(st))
        return {"logits": self.decode(h, training=training), "h": h}

    def sequence_logits(self, inputs, training=False):
        h, _ = self.encode_stream(self._stream_from_pipeline(inputs), training=training)
        return self.decode(h[:, 1:], training=training)

    def prefix_logits(self, inputs, training=False):
        h, _ = self.encode_stream(self._stream_from_pipeline(inputs), training=training)
        return self.decode(gather_last(h, lengths_of(inputs["items"]) + 1), training=training)

    def call(self, inputs, training=False):
        if "s_items" in inputs:
            return self.stream_outputs(inputs, training=training)
        return super().call(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, dict):
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        # TBPTT batches: means over the targets of the GLOBAL batch, so that under
        # several replicas (each with its own lanes) the summed gradients equal the
        # one-device gradient whatever the replicas' target counts
        targets = ops.cast(y["items"], "int32")
        w = ops.cast(ops.not_equal(targets, 0), "float32")
        if sample_weight is not None:
            w = w * ops.cast(sample_weight, "float32")
        ce = keras.losses.sparse_categorical_crossentropy(targets, ops.cast(y_pred["logits"], "float32"),
                                                          from_logits=True)
        loss = _global_mean(ops.sum(ce * w), ops.sum(w))
        if self.rating_weight > 0:
            r = ops.cast(self.rating_from_h(y_pred["h"], targets), "float32")
            z = (ops.cast(y["values"], "float32") - self.value_mean) / self.value_std
            wr = ops.cast(ops.not_equal(targets, 0), "float32")
            loss = loss + self.rating_weight * _global_mean(ops.sum(wr * (r - z) ** 2), ops.sum(wr))
        if self.losses:
            extra = ops.sum(ops.stack([ops.cast(e, "float32") for e in self.losses]))
            loss = loss + _scale_for_replicas(extra)
        return loss

    # ------------------------------------------------------------ training data
    def make_dataset(self, seqs: SequenceSet, shuffle: bool = True, batch_size: Optional[int] = None):
        stream = build_stream(seqs, self.bos, self.first_targets)
        if self.training_layout == "tbptt":
            make = lambda e: tbptt_batches(stream, self.lanes, self.chunk, shuffle, self.seed, e)  # noqa: E731
            n = num_tbptt_batches(stream, self.lanes, self.chunk)
        else:
            bs = batch_size or self.batch_size
            make = lambda e: padded_stream_batches(stream, bs, shuffle, self.seed, e, self.bucket)  # noqa: E731
            n = -(-int((np.diff(stream.offsets) > 0).sum()) // bs)
        example = next(iter(make(0)))
        # during ``fit`` a pass shuffles for the Keras epoch it trains (see train_epoch)
        return to_tf_dataset(lambda e: make(self.train_epoch(e)), example, num_batches=n)

    def _compiled_fn(self, key, fn):
        f = getattr(self, key, None)
        if f is None:
            import tensorflow as tf

            f = tf.function(fn, reduce_retracing=True)
            setattr(self, key, f)
        return f

    def predict_stream(self, x, logits: bool = True):
        """Numpy ``{"logits", "h"}`` (``{"h"}`` without ``logits``) for a stream
        batch, from a zero state."""
        x = {k: ops.convert_to_tensor(v) for k, v in x.items() if k != "reset"}
        if logits:
            fn = self._compiled_fn("_compiled_stream", lambda x: self.stream_outputs(x, training=False))
            return {k: ops.convert_to_numpy(v) for k, v in fn(x).items()}
        fn = self._compiled_fn("_compiled_encode", lambda x: self.encode_stream(x, training=False)[0])
        return {"h": ops.convert_to_numpy(fn(x))}

    def decode_rows(self, h):
        """Numpy logits for representation rows ``h [n, H]``."""
        fn = self._compiled_fn("_compiled_decode", lambda h: self.decode(h, training=False))
        return ops.convert_to_numpy(fn(ops.convert_to_tensor(h)))

    def predict_ratings(self, h, items):
        return (ops.convert_to_numpy(self.rating_from_h(ops.convert_to_tensor(h), ops.convert_to_tensor(items)))
                * self.value_std + self.value_mean)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(embedding_dim=self.embedding_dim, hidden=self.hidden, cell=self.cell_kind,
                   encoder=self.encoder, use_levels=self.use_levels, level_thresholds=self.level_thresholds,
                   control_dim=self.control_dim, num_users=self.num_users,
                   user_cardinalities=self.user_cardinalities, user_embedding_dim=self.user_embedding_dim,
                   user_proj_dim=self.user_proj_dim, feedback=self.feedback, feedback_dim=self.feedback_dim,
                   value_mean=self.value_mean, value_std=self.value_std,
                   item_feature_dim=self.item_feature_dim, id_factors=self.id_factors,
                   feature_hidden=self.feature_hidden, feature_inputs=self.feature_inputs,
                   lambda_train=self.lambda_train, lambda_eval=self.lambda_eval,
                   temporal_conv=self.temporal_conv, conv_layers=self.conv_layers, conv_kernel=self.conv_kernel,
                   rating_weight=self.rating_weight, rating_dim=self.rating_dim,
                   training_layout=self.training_layout, lanes=self.lanes, chunk=self.chunk,
                   first_targets=self.first_targets, dropout=self.dropout_rate,
                   session_level=self.session_level)
        return cfg


_TINY = {"embedding_dim": 8, "hidden": 8, "lanes": 4, "chunk": 5, "control_dim": 4, "user_embedding_dim": 4,
         "user_proj_dim": 4, "rating_dim": 4}
_FIT = {"epochs": 30, "patience": 5, "learning_rate": 3e-3}


@register("hrnn_meta", model_config={"use_levels": True, "use_user_features": True, "use_item_features": True,
                                     "feedback": True},
          fit_config=_FIT, test_config=_TINY,
          description="HRNN-meta: hierarchy control + user features + feedback + FM item-feature decoder.")
class HRNNMetaModel(HRNNMeta):
    """HRNN-meta with every meta-data channel on (registry entry ``hrnn_meta``)."""


@register("hrnn", model_config={"use_levels": True}, fit_config=_FIT, test_config=_TINY,
          description="HRNN: GRU with the hierarchy-control input (sessions encoded in the inputs).")
class HRNN(HRNNMeta):
    """HRNN without meta data (registry entry ``hrnn``)."""


@register("rnn", model_config={"use_levels": False}, fit_config=_FIT, test_config=_TINY,
          description="Vanilla GRU language-model recommender trained with TBPTT (HRNN-meta's RNN baseline).")
class RNN(HRNNMeta):
    """Vanilla RNN baseline (registry entry ``rnn``)."""


@register("rnn_meta", model_config={"use_levels": False, "use_user_features": True, "use_item_features": True,
                                    "feedback": True},
          fit_config=_FIT, test_config=_TINY, description="RNN-meta: RNN with meta data but no hierarchy control.")
class RNNMeta(HRNNMeta):
    """RNN with user/item features and feedback, no control input (``rnn_meta``)."""


@register("hgru", model_config={"cell": "hgru", "use_levels": True}, fit_config=_FIT, test_config=_TINY,
          description="HGRU (Quadrana et al. 2017): session GRU re-initialised from a user GRU at session starts.")
class HGRU(HRNNMeta):
    """HGRU baseline (registry entry ``hgru``)."""


@register("item_fm", model_config={"encoder": "last_item_features", "use_item_features": True,
                                   "use_levels": False, "id_factors": False, "lambda_train": 0.5,
                                   "lambda_eval": 0.5},
          fit_config=_FIT, test_config=_TINY,
          description="Item-feature FM: popularity + interactions of last-item and candidate features.")
class ItemFM(HRNNMeta):
    """FM over the features of the user's last item and of every candidate, plus a
    popularity bias (the paper's 'item features' baseline, registry ``item_fm``)."""


# Registered subclasses must round-trip through .keras files under their own names.
for _cls in (HRNNMetaModel, HRNN, RNN, RNNMeta, HGRU, ItemFM):
    keras.saving.register_keras_serializable(package="tfrec")(_cls)


# --------------------------------------------------------------------------- evaluation
def stream_evaluate(model: HRNNMeta, seqs: SequenceSet, first_targets: bool = True, batch_size: int = 64,
                    ratings: bool = False, ranking: bool = True,
                    candidate_mask: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Scores every stream target of ``seqs`` (including each sequence's first item
    when ``first_targets``), one sequence per row from a zero state.

    Returns flat arrays over targets: ``seq``, ``pos`` (position in the
    sequence), ``target``, ``delta`` (seconds since the previous event, inf for a
    first item), ``logp`` (log-softmax of the target), ``rank`` (conservative,
    padding excluded; only among ``candidate_mask`` items when given -- the target
    always counts), and ``rating``/``value`` when ``ratings``.
    """
    stream = build_stream(seqs, model.bos, first_targets)
    out: Dict[str, list] = {k: [] for k in ("seq", "pos", "target", "delta", "logp", "rank", "rating", "value")}
    keep = np.flatnonzero(np.diff(stream.offsets) > 0)
    feats = set(model.input_features)
    for a in range(0, len(keep), batch_size):
        idx = keep[a:a + batch_size]
        x, y = padded_stream_batch(stream, idx)
        if "next_deltas" not in feats:
            x.pop("s_deltas")
        if "values" not in feats:
            x.pop("s_values")
        if "user" not in feats:
            x.pop("s_user")
        h = model.predict_stream(x, logits=False)["h"]
        t = y["items"]
        m = t != 0
        rows, cols = np.nonzero(m)
        out["seq"].append(idx[rows])
        out["pos"].append(cols)
        out["target"].append(t[m])
        out["delta"].append(stream.deltas[stream.offsets[idx][rows] + cols])
        if ranking:
            logits = model.decode_rows(h[m]).astype(np.float64)
            tm = t[m]
            mx = logits.max(-1)
            lse = np.log(np.exp(logits - mx[:, None]).sum(-1)) + mx
            out["logp"].append(logits[np.arange(len(tm)), tm] - lse)
            mask = np.ones(logits.shape[-1], bool) if candidate_mask is None else np.array(candidate_mask, bool)
            mask[0] = False
            out["rank"].append(ranks_from_scores(logits, tm, "conservative", mask))
        if ratings and model.rating_weight > 0:
            out["rating"].append(model.predict_ratings(h[m], t[m]))
            out["value"].append(y["values"][m])
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}


def perplexity(logp: np.ndarray) -> float:
    return float(np.exp(-np.mean(logp))) if len(logp) else float("nan")


def recall_at(rank: np.ndarray, k: int = 20) -> float:
    return float(np.mean(rank <= k)) if len(rank) else float("nan")


def recommend_at(model: HRNNMeta, history: Sequence[int], gap_seconds: float, times=None, values=None,
                 user: int = 0, k: int = 10) -> np.ndarray:
    """Top-``k`` items for a history given the time that will have passed since its
    last event at query time (``gap_seconds``; query-time control, Table 5)."""
    items = np.asarray(history, np.int32)[None, :]
    x = {"items": items}
    if "next_deltas" in model.input_features:
        t = np.zeros(len(history)) if times is None else np.asarray(times, np.float64)
        nd = np.append(np.diff(t), gap_seconds).astype(np.float32)
        x["next_deltas"] = nd[None, :]
    if "values" in model.input_features:
        x["values"] = (np.zeros(len(history)) if values is None else np.asarray(values))[None, :].astype(np.float32)
    if "user" in model.input_features:
        x["user"] = np.array([user], np.int32)
    scores = model.score_prefix_batch(x)[0]
    scores[0] = -np.inf
    return np.argsort(-scores, kind="stable")[:k]


# --------------------------------------------------------------------------- rating baselines
def _rating_targets(seqs: SequenceSet):
    s, p = seqs.target_index()
    ev = seqs.offsets[s] + p
    return s, p, ev


class RollingAverageRating:
    """Rating baseline: the mean of the item's average rating (training events)
    and the user's average rating over the history before the target (rolling).
    Falls back to the global mean when either is unknown."""

    def fit(self, train: SequenceSet, num_items: int):
        self.mu = float(train.values.mean())
        sums = np.bincount(train.items, weights=train.values, minlength=num_items)
        cnt = np.bincount(train.items, minlength=num_items)
        self.item_avg = np.where(cnt > 0, sums / np.maximum(cnt, 1), self.mu)
        return self

    def predict(self, seqs: SequenceSet) -> np.ndarray:
        s, p, ev = _rating_targets(seqs)
        csum = np.concatenate([[0.0], np.cumsum(seqs.values, dtype=np.float64)])
        start = seqs.offsets[s]
        n = p.astype(np.float64)
        user_avg = np.where(n > 0, (csum[ev] - csum[start]) / np.maximum(n, 1), self.mu)
        return 0.5 * (self.item_avg[seqs.items[ev]] + user_avg)


class BiasedMFRating:
    """Factorization baseline (Rendle 2012 style biased MF): ``r = mu + b_u + b_i +
    p_u . q_i`` fitted by SGD on the training events (users unknown at training
    get only the item term)."""

    def __init__(self, factors: int = 16, epochs: int = 30, lr: float = 0.01, reg: float = 0.05, seed: int = 0):
        self.factors, self.epochs, self.lr, self.reg, self.seed = factors, epochs, lr, reg, seed

    def fit(self, train: SequenceSet, num_items: int, num_users: int):
        rng = np.random.default_rng(self.seed)
        u = np.repeat(train.users, train.lengths).astype(np.int64)
        i = train.items.astype(np.int64)
        r = train.values.astype(np.float64)
        self.mu = r.mean()
        self.bu, self.bi = np.zeros(num_users), np.zeros(num_items)
        self.P = rng.normal(0, 0.1, (num_users, self.factors))
        self.Q = rng.normal(0, 0.1, (num_items, self.factors))
        for _ in range(self.epochs):
            for k in rng.permutation(len(r)):
                uu, ii = u[k], i[k]
                e = r[k] - (self.mu + self.bu[uu] + self.bi[ii] + self.P[uu] @ self.Q[ii])
                self.bu[uu] += self.lr * (e - self.reg * self.bu[uu])
                self.bi[ii] += self.lr * (e - self.reg * self.bi[ii])
                pu = self.P[uu].copy()
                self.P[uu] += self.lr * (e * self.Q[ii] - self.reg * pu)
                self.Q[ii] += self.lr * (e * pu - self.reg * self.Q[ii])
        return self

    def predict(self, seqs: SequenceSet) -> np.ndarray:
        s, p, ev = _rating_targets(seqs)
        u = seqs.users[s].astype(np.int64)
        i = seqs.items[ev].astype(np.int64)
        return self.mu + self.bu[u] + self.bi[i] + np.sum(self.P[u] * self.Q[i], 1)


def rating_rmse(pred: np.ndarray, seqs: SequenceSet) -> float:
    """RMSE of per-target predictions (in ``seqs.target_index()`` order)."""
    _, _, ev = _rating_targets(seqs)
    return float(np.sqrt(np.mean((np.asarray(pred) - seqs.values[ev]) ** 2)))


def model_rating_predictions(model: HRNNMeta, seqs: SequenceSet, batch_size: int = 64) -> np.ndarray:
    """Rating predictions of ``model`` for every target of ``seqs`` in
    ``seqs.target_index()`` order."""
    r = stream_evaluate(model, seqs, first_targets=False, batch_size=batch_size, ratings=True, ranking=False)
    order = np.lexsort((r["pos"], r["seq"]))
    return r["rating"][order]


__all__ = ["HRNNMeta", "HRNN", "RNN", "RNNMeta", "HGRU", "ItemFM", "HRNNMetaModel", "stream_evaluate",
           "perplexity", "recall_at", "recommend_at", "RollingAverageRating", "BiasedMFRating", "rating_rmse",
           "model_rating_predictions"]
