"""HRNN-meta layers (Ma & Narayanaswamy, "Hierarchical Temporal-Contextual Recommenders").

* :class:`HierarchyLevel` -- the hierarchy-control signal computed in-graph from
  time deltas (same levels as :func:`tfrec.data.sessionize.hierarchy_levels`), so an
  exported model takes raw seconds at query time.
* :class:`HRNNMetaCell` -- the paper's Fig. 2 cell: wraps *any* Keras RNN cell
  and feeds it, per step, the item embedding concatenated with a learned embedding
  of the hierarchy level, a dimension-reduced embedding of user features and an
  embedding of the interaction feedback.
* :class:`HGRUCell` -- Quadrana et al. (2017) HGRU for comparison: a session GRU
  whose state is re-initialised at session starts from a user GRU that is updated
  at session ends (state manipulation instead of control inputs).
* :class:`FeatureMixDecoder` -- the factorization-machine-inspired decoder
  ``phi~_j(h) = (1 - lam) phi_j(h) + lam (w(f_j)^T h + b(f_j))`` with ``lam``
  randomised in training so feature embeddings substitute for item ids.
* :class:`TemporalConvStack` -- dilated causal Conv1D blocks (Bai et al. 2018),
  used before or instead of the RNN.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
from keras import layers, ops

from tfrec.data.sessionize import DEFAULT_LEVEL_THRESHOLDS


@keras.saving.register_keras_serializable(package="tfrec")
class HierarchyLevel(layers.Layer):
    """Hierarchy level of each event from the seconds since the previous event.

    Level ``i`` counts the thresholds ``<= delta``; ``inf`` (a sequence start) is
    level ``len(thresholds) + 1``. With the defaults (1 min, 1 h, 1 day) levels are
    0..3 and 4 marks a first event, exactly as
    :func:`tfrec.data.sessionize.hierarchy_levels`.

    Args:
        thresholds: increasing gaps in seconds.

    Call arguments:
        deltas: float tensor of seconds (any shape).

    Returns:
        int32 tensor of levels, same shape.

    Example:

    >>> import numpy as np
    >>> lv = HierarchyLevel()(np.array([np.inf, 5.0, 120.0, 7200.0, 1e6], "float32"))
    >>> keras.ops.convert_to_numpy(lv).tolist()
    [4, 0, 1, 2, 3]
    """

    def __init__(self, thresholds: Sequence[float] = DEFAULT_LEVEL_THRESHOLDS, **kwargs):
        super().__init__(**kwargs)
        thresholds = [float(t) for t in thresholds]
        if not thresholds or any(b <= a for a, b in zip(thresholds, thresholds[1:])):
            raise ValueError("thresholds must be a non-empty increasing sequence")
        self.thresholds = thresholds

    @property
    def num_levels(self) -> int:
        return len(self.thresholds) + 2

    def call(self, deltas):
        d = ops.cast(deltas, "float32")
        level = ops.zeros_like(d, dtype="int32")
        for t in self.thresholds:
            level = level + ops.cast(ops.greater_equal(d, t), "int32")
        first = ops.full_like(level, len(self.thresholds) + 1)
        return ops.where(ops.isinf(d), first, level)

    def compute_output_spec(self, deltas):
        return keras.KerasTensor(deltas.shape, dtype="int32")

    def get_config(self):
        return {**super().get_config(), "thresholds": list(self.thresholds)}


def _split_sizes(item_dim, num_levels, user_dim, feedback):
    return [item_dim, 1 if num_levels else 0, user_dim, 1 if feedback else 0]


@keras.saving.register_keras_serializable(package="tfrec")
class HRNNMetaCell(layers.Layer):
    """HRNN-meta cell (Fig. 2): control, user and feedback embeddings around any RNN cell.

    Each step receives one packed float vector ``[item_embedding | level |
    user_vector | feedback]`` (see :meth:`pack`); the cell embeds the level
    (learned embedding, the "control" input of Fig. 1), projects the user
    features and the feedback to small dense embeddings, concatenates everything
    with the item embedding and runs the wrapped cell on it. Sessions are thus
    encoded in the inputs, not by manipulating the hidden state, so the cell works
    with any Keras RNN cell (GRU, LSTM, SimpleRNN or tfrec cells) and with TBPTT.

    Args:
        cell: the inner Keras RNN cell (e.g. ``keras.layers.GRUCell(64)``).
        item_dim: width of the item embedding part of the packed input.
        num_levels: number of hierarchy levels (0: no control input).
        control_dim: width of the level embedding.
        user_dim: width of the user-feature part of the packed input (0: none).
        user_proj_dim: width of the dimension-reduced user embedding.
        feedback: whether the packed input ends with a feedback value.
        feedback_dim: width of the feedback embedding.

    Call arguments:
        inputs: ``[B, packed_dim]`` packed step input.
        states: the inner cell's states.

    Returns:
        ``(output, new_states)`` of the inner cell.

    Example:

    >>> import numpy as np
    >>> cell = HRNNMetaCell(keras.layers.GRUCell(8), item_dim=4, num_levels=5)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> x = HRNNMetaCell.pack(np.zeros((2, 3, 4)), np.zeros((2, 3)))
    >>> tuple(rnn(x).shape)
    (2, 3, 8)
    """

    def __init__(self, cell, item_dim: int, num_levels: int = 0, control_dim: int = 8,
                 user_dim: int = 0, user_proj_dim: int = 16, feedback: bool = False,
                 feedback_dim: int = 4, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        self.cell = cell
        self.item_dim = int(item_dim)
        self.num_levels = int(num_levels)
        self.control_dim = int(control_dim)
        self.user_dim = int(user_dim)
        self.user_proj_dim = int(user_proj_dim)
        self.feedback = bool(feedback)
        self.feedback_dim = int(feedback_dim)
        self.control_embedding = (layers.Embedding(self.num_levels, self.control_dim, name="control_embedding")
                                  if self.num_levels else None)
        self.user_projection = (layers.Dense(self.user_proj_dim, activation="tanh", name="user_projection")
                                if self.user_dim else None)
        self.feedback_projection = (layers.Dense(self.feedback_dim, activation="tanh", name="feedback_projection")
                                    if self.feedback else None)
        self.state_size = cell.state_size
        self.output_size = getattr(cell, "output_size", None) or (
            cell.state_size[0] if isinstance(cell.state_size, (list, tuple)) else cell.state_size)

    @property
    def packed_dim(self) -> int:
        return sum(_split_sizes(self.item_dim, self.num_levels, self.user_dim, self.feedback))

    @property
    def embedded_dim(self) -> int:
        return (self.item_dim + (self.control_dim if self.num_levels else 0)
                + (self.user_proj_dim if self.user_dim else 0) + (self.feedback_dim if self.feedback else 0))

    @staticmethod
    def pack(item_embedding, levels=None, user_vector=None, feedback=None):
        """Concatenates the per-step parts into the cell's packed input ``[..., P]``."""
        parts = [ops.cast(item_embedding, "float32")]
        if levels is not None:
            parts.append(ops.expand_dims(ops.cast(levels, "float32"), -1))
        if user_vector is not None:
            parts.append(ops.cast(user_vector, "float32"))
        if feedback is not None:
            parts.append(ops.expand_dims(ops.cast(feedback, "float32"), -1))
        return ops.concatenate(parts, axis=-1)

    def embed_inputs(self, packed):
        """Embeds a packed input of any rank ``[..., P]`` -> ``[..., embedded_dim]``
        (used per step by :meth:`call`, and on whole sequences by the
        temporal-convolution path)."""
        sizes = _split_sizes(self.item_dim, self.num_levels, self.user_dim, self.feedback)
        parts, start = [], 0
        for s in sizes:
            parts.append(packed[..., start:start + s] if s else None)
            start += s
        item, level, user, fb = parts
        out = [item]
        if level is not None:
            out.append(self.control_embedding(ops.cast(ops.round(level[..., 0]), "int32")))
        if user is not None:
            out.append(self.user_projection(user))
        if fb is not None:
            out.append(self.feedback_projection(fb))
        return ops.concatenate(out, axis=-1) if len(out) > 1 else item

    def build(self, input_shape):
        batch = tuple(input_shape[:-1])
        if self.control_embedding is not None:
            self.control_embedding.build(batch)
        if self.user_projection is not None:
            self.user_projection.build(batch + (self.user_dim,))
        if self.feedback_projection is not None:
            self.feedback_projection.build(batch + (1,))
        if not self.cell.built:
            self.cell.build(batch + (self.embedded_dim,))
        self.built = True

    def call(self, inputs, states, training=False):
        return self.cell(self.embed_inputs(inputs), states, training=training)

    def get_initial_state(self, batch_size=None):
        return self.cell.get_initial_state(batch_size=batch_size)

    def get_config(self):
        return {**super().get_config(), "cell": keras.saving.serialize_keras_object(self.cell),
                "item_dim": self.item_dim, "num_levels": self.num_levels,
                "control_dim": self.control_dim, "user_dim": self.user_dim,
                "user_proj_dim": self.user_proj_dim, "feedback": self.feedback,
                "feedback_dim": self.feedback_dim}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["cell"] = keras.saving.deserialize_keras_object(config["cell"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfrec")
class HGRUCell(layers.Layer):
    """HGRU (Quadrana et al. 2017) as a cell: session GRU + user GRU.

    Packed step input: ``[item_embedding | level]`` where ``level`` is the
    hierarchy level of the gap to the *next* event (the one this step predicts).
    The session GRU reads the item; if the next event starts a new session
    (``level >= session_level``) the user GRU is updated with the final session
    state and the session state is re-initialised as ``tanh(W_init c + b)``; if it
    starts a new user (``level == first_level``) the user state is zeroed first.

    Args:
        units: width of both GRUs.
        item_dim: width of the item embedding in the packed input.
        session_level: smallest level that starts a new session (2 = an hour with
            the default thresholds).
        first_level: the level marking a user's first event (4 by default).

    Returns:
        ``(s, [s, c])``: session state as output, session and user states.

    Example:

    >>> import numpy as np
    >>> rnn = keras.layers.RNN(HGRUCell(8, item_dim=4), return_sequences=True)
    >>> tuple(rnn(np.zeros((2, 3, 5), "float32")).shape)
    (2, 3, 8)
    """

    def __init__(self, units: int, item_dim: int, session_level: int = 2, first_level: int = 4,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.item_dim = int(item_dim)
        self.session_level = int(session_level)
        self.first_level = int(first_level)
        self.session_cell = layers.GRUCell(self.units, name="session_gru")
        self.user_cell = layers.GRUCell(self.units, name="user_gru")
        self.session_init = layers.Dense(self.units, activation="tanh", name="session_init")
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        batch = tuple(input_shape[:-1])
        self.session_cell.build(batch + (self.item_dim,))
        self.user_cell.build(batch + (self.units,))
        self.session_init.build(batch + (self.units,))
        self.built = True

    def call(self, inputs, states, training=False):
        x = inputs[..., : self.item_dim]
        level = ops.cast(ops.round(inputs[..., self.item_dim]), "int32")
        s, c = states[0], states[1]
        s1, _ = self.session_cell(x, [s], training=training)
        new_user = ops.expand_dims(ops.equal(level, self.first_level), -1)
        new_session = ops.logical_and(ops.expand_dims(ops.greater_equal(level, self.session_level), -1),
                                      ops.logical_not(new_user))
        c_updated, _ = self.user_cell(s1, [c], training=training)
        c2 = ops.where(new_user, ops.zeros_like(c), ops.where(new_session, c_updated, c))
        s2 = ops.where(ops.logical_or(new_user, new_session), self.session_init(c2), s1)
        return s2, [s2, c2]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "item_dim": self.item_dim,
                "session_level": self.session_level, "first_level": self.first_level}


@keras.saving.register_keras_serializable(package="tfrec")
class FeatureMixDecoder(layers.Layer):
    """FM-inspired decoder mixing id scores with item-feature scores (HRNN-meta §2).

    ``phi_j(h) = w_j^T h + b_j`` (ids; ``id_factors=False`` keeps only the
    popularity bias ``b_j``) and ``psi_j(h) = w(f_j)^T h + b(f_j)`` with ``w, b``
    learned functions (a dense layer, optionally after a hidden layer) of the
    item-feature row ``f_j``. Scores are ``(1 - lam) phi + lam psi``.

    ``lam`` is randomised in training (uniform per row, or fixed when
    ``lambda_train`` is a number) so each branch learns to score on its own
    (features *substitute* for ids). At inference ``lam = lambda_eval`` for items
    seen in training and 1 for items never seen (``seen`` mask), so cold-start
    items are scored from their features alone.

    Args:
        num_items: number of item classes (rows of the feature table).
        num_features: width of the item-feature table (0: ids only).
        id_factors: learn ``w_j`` (False: ``phi_j = b_j``).
        feature_hidden: hidden width of ``w(.)`` (0: linear).
        lambda_train: ``None`` (random uniform per row) or a fixed value.
        lambda_eval: mixing weight at inference for seen items.

    Call arguments:
        h: ``[..., H]`` user/session representation.
        lam: optional explicit mixing weight (scalar or broadcastable tensor).

    Returns:
        logits ``[..., num_items]``.
    """

    def __init__(self, num_items: int, num_features: int = 0, id_factors: bool = True,
                 feature_hidden: int = 0, lambda_train: Optional[float] = None,
                 lambda_eval: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.num_items = int(num_items)
        self.num_features = int(num_features)
        self.id_factors = bool(id_factors)
        self.feature_hidden = int(feature_hidden)
        self.lambda_train = None if lambda_train is None else float(lambda_train)
        self.lambda_eval = float(lambda_eval)
        self.seed_generator = keras.random.SeedGenerator(0)
        if self.num_features:
            self.item_features = self.add_weight(shape=(self.num_items, self.num_features),
                                                 initializer="zeros", trainable=False,
                                                 name="item_feature_table")
            self.seen = self.add_weight(shape=(self.num_items,), initializer="ones",
                                        trainable=False, name="seen_in_training")
            self.feature_mlp = (layers.Dense(self.feature_hidden, activation="tanh", name="feature_hidden")
                                if self.feature_hidden else None)
            self.feature_bias = layers.Dense(1, name="feature_bias")

    def build(self, h_shape):
        H = int(h_shape[-1])
        if self.id_factors:
            self.w = self.add_weight(shape=(self.num_items, H), initializer="glorot_uniform", name="id_factors")
        self.b = self.add_weight(shape=(self.num_items,), initializer="zeros", name="id_bias")
        if self.num_features:
            width = self.num_features
            if self.feature_mlp is not None:
                self.feature_mlp.build((self.num_items, width))
                width = self.feature_hidden
            self.feature_factors = layers.Dense(H, use_bias=False, name="feature_factors")
            self.feature_factors.build((self.num_items, width))
            self.feature_bias.build((self.num_items, width))
        self.built = True

    def id_logits(self, h):
        if self.id_factors:
            return ops.matmul(h, ops.transpose(self.w)) + self.b
        return ops.zeros_like(h[..., :1]) + self.b

    def feature_logits(self, h):
        f = ops.convert_to_tensor(self.item_features)
        if self.feature_mlp is not None:
            f = self.feature_mlp(f)
        w = self.feature_factors(f)  # [N, H]
        b = ops.squeeze(self.feature_bias(f), -1)
        return ops.matmul(h, ops.transpose(w)) + b

    def call(self, h, training=False, lam=None):
        # scores are mixed and returned in float32 (mixed precision keeps the softmax in float32)
        phi = ops.cast(self.id_logits(h), "float32")
        if not self.num_features:
            return phi
        psi = ops.cast(self.feature_logits(h), "float32")
        if lam is None:
            if training:
                if self.lambda_train is None:
                    lam = keras.random.uniform(ops.shape(h)[:-1], seed=self.seed_generator)
                    lam = ops.expand_dims(lam, -1)
                else:
                    lam = self.lambda_train
            else:
                seen = ops.convert_to_tensor(self.seen)
                lam = seen * self.lambda_eval + (1.0 - seen)
        lam = ops.cast(lam, "float32")
        return (1.0 - lam) * phi + lam * psi

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items, "num_features": self.num_features,
                "id_factors": self.id_factors, "feature_hidden": self.feature_hidden,
                "lambda_train": self.lambda_train, "lambda_eval": self.lambda_eval}


@keras.saving.register_keras_serializable(package="tfrec")
class TemporalConvStack(layers.Layer):
    """Dilated causal 1-D convolutions with residual connections (TCN blocks).

    Layer ``i`` has dilation ``2**i``; the receptive field is
    ``1 + (kernel_size - 1) * (2**num_layers - 1)`` steps. Causal padding keeps
    the output at step ``t`` a function of steps ``<= t`` only.

    Args:
        filters: output width (also the residual width).
        num_layers: number of dilated blocks.
        kernel_size: convolution width.
        dropout: dropout after each block.

    Example:

    >>> import numpy as np
    >>> tuple(TemporalConvStack(8, num_layers=2)(np.zeros((2, 5, 3), "float32")).shape)
    (2, 5, 8)
    """

    def __init__(self, filters: int, num_layers: int = 2, kernel_size: int = 3, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.num_layers = int(num_layers)
        self.kernel_size = int(kernel_size)
        self.dropout_rate = float(dropout)
        self.input_projection = layers.Dense(self.filters, name="input_projection")
        self.convs = [layers.Conv1D(self.filters, self.kernel_size, padding="causal", dilation_rate=2 ** i,
                                    activation="relu", name=f"conv_{i}") for i in range(self.num_layers)]
        self.dropout = layers.Dropout(self.dropout_rate)

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel_size - 1) * (2 ** self.num_layers - 1)

    def build(self, input_shape):
        self.input_projection.build(input_shape)
        shape = tuple(input_shape[:-1]) + (self.filters,)
        for conv in self.convs:
            conv.build(shape)
        self.built = True

    def call(self, x, training=False):
        z = self.input_projection(x)
        for conv in self.convs:
            z = z + self.dropout(conv(z), training=training)
        return z

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "num_layers": self.num_layers,
                "kernel_size": self.kernel_size, "dropout": self.dropout_rate}
