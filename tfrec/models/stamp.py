"""STAMP (Liu et al. 2018): short-term attention/memory priority."""

from __future__ import annotations

import keras
from keras import layers, ops

from tfrec.layers.embeddings import table_item_embedding
from tfrec.models.base import SequentialRecommender, gather_last, lengths_of
from tfrec.models.registry import register


@register("stamp",
          model_config={"embedding_dim": 100, "batch_size": 512, "score_activation": "sigmoid"},
          test_config={"embedding_dim": 8, "batch_size": 32},
          description="STAMP: attention over the history with last-click priority, trilinear score.")
@keras.saving.register_keras_serializable(package="tfrec")
class STAMP(SequentialRecommender):
    """STAMP: short-term attention/memory priority model.

    With item embeddings ``x_1..x_t`` of the history, ``m_s = mean_i x_i`` (general
    interest) and ``m_t = x_t`` (last click):

    * attention ``a_i = w_0 . sigmoid(W_1 x_i + W_2 x_t + W_3 m_s + b_a)`` (eq. 7),
      ``m_a = sum_i a_i x_i`` (eq. 8; padding masked);
    * ``h_s = tanh(W_s m_a + b_s)``, ``h_t = tanh(W_t m_t + b_t)`` (eqs. 9-10);
    * trilinear score ``z_i = act(<h_s * h_t, e_i>)`` with the item embedding
      ``e_i`` shared with the input (eq. 11), then softmax cross-entropy.

    ``score_activation="sigmoid"`` follows the paper and the HCRNN authors' code
    (``sigmoid`` before the softmax); ``"linear"`` uses the raw trilinear scores.
    The attention weights are not normalised (as in the paper). No dropout by default
    (as in the HCRNN authors' code); ``input_dropout``/``decoder_dropout`` add the
    table's dropouts (on the item embeddings of the history and on ``h_s * h_t``).

    STAMP is causal: the scores after position ``t`` use items ``1..t`` only. So it
    also trains prefix-parallel (``layout="sequence"``, whole sequences with a target
    at every step, attention under a causal mask), the same objective as prefix
    augmentation (tested), in one pass per sequence instead of one per prefix; set
    ``target_normalizer`` with length-bucketed batches (see
    :class:`~tfrec.models.base.SequentialRecommender`). That pass holds
    ``[B, T, T, d]`` attention inputs, so it suits short sequences (CiteULike's
    <= 99); evaluation falls back to prefix scoring beyond 200 events.

    Args:
        num_items: classes including padding 0.
        embedding_dim: item embedding size (100).
        score_activation: ``"sigmoid"`` or ``"linear"``.
        input_dropout: dropout on the history's item embeddings (0: none).
        decoder_dropout: dropout on ``h_s * h_t`` before the trilinear score (0: none).
        init: ``"table"`` (item embedding ``N(0, 0.1²)`` as the other table models,
            Glorot kernels) or ``"stamp"`` (STAMP's own code: embeddings
            ``N(0, 0.002²)``, kernels ``N(0, 0.05²)``).
        **kwargs: ``layout``, ``batch_size``, ``bucket``, ``seed``, ``target_normalizer``.

    Example:

    >>> import numpy as np
    >>> m = STAMP(num_items=10, embedding_dim=4)
    >>> m.score_prefix_batch({"items": np.array([[1, 2, 0]])}).shape
    (1, 10)
    """

    probabilistic = True
    causal = True
    # encode_sequence holds [B, T, T, d] attention inputs: evaluation scores longer
    # sequences prefix by prefix (ml-100k's 735-event histories need ~14 GB otherwise)
    sequence_scoring_max_length = 200

    def __init__(self, num_items, embedding_dim: int = 100, score_activation: str = "sigmoid",
                 init: str = "table", input_dropout: float = 0.0, decoder_dropout: float = 0.0,
                 **kwargs):
        super().__init__(num_items, **kwargs)
        for name, rate in (("input_dropout", input_dropout), ("decoder_dropout", decoder_dropout)):
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        self.input_dropout, self.decoder_dropout = float(input_dropout), float(decoder_dropout)
        self.in_drop = layers.Dropout(self.input_dropout, seed=self.seed)
        self.out_drop = layers.Dropout(self.decoder_dropout, seed=self.seed + 1)
        if score_activation not in ("sigmoid", "linear"):
            raise ValueError(f"score_activation must be 'sigmoid' or 'linear', got {score_activation!r}")
        if init not in ("table", "stamp"):
            raise ValueError(f"init must be 'table' or 'stamp', got {init!r}")
        self.embedding_dim = int(embedding_dim)
        self.score_activation = score_activation
        self.init = init
        d = self.embedding_dim
        if init == "table":
            self.item_embedding = table_item_embedding(self.num_items, d, self.seed)
            kernel = lambda i: "glorot_uniform"  # noqa: E731
        else:  # STAMP's own code: embeddings N(0, 0.002^2), weights N(0, 0.05^2)
            self.item_embedding = layers.Embedding(
                self.num_items, d, name="item_embedding",
                embeddings_initializer=keras.initializers.RandomNormal(0.0, 0.002, seed=self.seed))
            kernel = lambda i: keras.initializers.RandomNormal(0.0, 0.05, seed=self.seed + i)  # noqa: E731
        self.w1 = layers.Dense(d, use_bias=False, kernel_initializer=kernel(1), name="w1")
        self.w2 = layers.Dense(d, use_bias=False, kernel_initializer=kernel(2), name="w2")
        self.w3 = layers.Dense(d, use_bias=True, kernel_initializer=kernel(3), name="w3")  # carries b_a
        self.w0 = layers.Dense(1, use_bias=False, kernel_initializer=kernel(4), name="w0")
        self.mlp_s = layers.Dense(d, activation="tanh", kernel_initializer=kernel(5), name="mlp_general")
        self.mlp_t = layers.Dense(d, activation="tanh", kernel_initializer=kernel(6), name="mlp_last")

    def prefix_logits(self, inputs, training=False):
        items = inputs["items"]
        mask = ops.not_equal(items, 0)
        m = ops.expand_dims(ops.cast(mask, "float32"), -1)
        x = self.in_drop(self.item_embedding(items), training=training) * m
        n = ops.maximum(ops.sum(m, axis=1), 1.0)
        m_s = ops.sum(x, axis=1) / n
        x_t = gather_last(x, lengths_of(items))
        pre = self.w1(x) + ops.expand_dims(self.w2(x_t) + self.w3(m_s), 1)
        a = ops.squeeze(self.w0(ops.sigmoid(pre)), -1) * ops.cast(mask, "float32")  # eq. 7
        m_a = ops.sum(ops.expand_dims(a, -1) * x, axis=1)  # eq. 8
        return self.decode(self.mlp_s(m_a) * self.mlp_t(x_t), training=training)

    def encode_sequence(self, inputs, training=False):
        """``h_s * h_t`` after every position ``[B, T, d]``: position ``t`` attends
        over items ``1..t`` with ``m_s`` the mean of those items and ``x_t`` itself."""
        items = inputs["items"]
        mask = ops.cast(ops.not_equal(items, 0), "float32")  # [B, T]
        x = self.in_drop(self.item_embedding(items), training=training) * ops.expand_dims(mask, -1)
        m_s = ops.cumsum(x, axis=1) / ops.expand_dims(ops.maximum(ops.cumsum(mask, axis=1), 1.0), -1)
        query = self.w2(x) + self.w3(m_s)  # [B, T, d], one per position t
        pre = ops.expand_dims(self.w1(x), 1) + ops.expand_dims(query, 2)  # [B, T(t), T(i), d]
        t = ops.shape(items)[1]
        causal = ops.cast(ops.greater_equal(ops.expand_dims(ops.arange(t), 1),
                                            ops.expand_dims(ops.arange(t), 0)), "float32")  # i <= t
        a = ops.squeeze(self.w0(ops.sigmoid(pre)), -1) * causal * ops.expand_dims(mask, 1)
        m_a = ops.matmul(a, x)  # [B, T, d]
        return self.mlp_s(m_a) * self.mlp_t(x)

    def decode(self, h, training=False):
        h = self.out_drop(h, training=training)
        z = ops.matmul(h, ops.transpose(self.item_embedding.embeddings))
        if self.score_activation == "sigmoid":
            # "* 1.0": Keras' CE would otherwise find the pre-sigmoid tensor behind
            # ops.sigmoid and silently use it as the logits.
            return ops.sigmoid(z) * 1.0
        return z

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "score_activation": self.score_activation, "init": self.init,
                "input_dropout": self.input_dropout, "decoder_dropout": self.decoder_dropout}

