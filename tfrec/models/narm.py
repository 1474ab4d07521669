"""NARM (Li et al. 2017): neural attentive session-based recommendation."""

from __future__ import annotations

import keras
from keras import layers, ops

from tfrec.layers.attention import NARMAttention, masked_softmax
from tfrec.layers.decoders import BilinearDecoder
from tfrec.layers.embeddings import table_item_embedding
from tfrec.models.base import SequentialRecommender, gather_last, lengths_of
from tfrec.models.gru4rec import GateBiasInitializer
from tfrec.models.registry import register


@register("narm",
          model_config={"embedding_dim": 100, "units": 100, "input_dropout": 0.25,
                        "decoder_dropout": 0.5, "batch_size": 512},
          test_config={"embedding_dim": 8, "units": 8, "batch_size": 32},
          description="NARM: GRU global encoder + attentive local encoder, bilinear decoder.")
@keras.saving.register_keras_serializable(package="tfrec")
class NARM(SequentialRecommender):
    """NARM as the HCRNN authors ran it.

    ``item embedding (N(0, 0.1)) -> dropout -> GRU`` (TF1 ``GRUCell`` semantics);
    the global encoder is the last real state ``h_T``, the local encoder attends
    over all states (:class:`~tfrec.layers.NARMAttention`, masked over padding),
    ``s = [c_local ; h_T]`` and the bilinear decoder scores
    ``dropout(s) . (E B)^T`` with the input item embedding ``E`` shared
    (:class:`~tfrec.layers.BilinearDecoder`).

    The representation after step ``t`` depends on items ``1..t`` only (the
    attention runs over ``h_1..h_t`` with query ``h_t``), so NARM is causal:
    ``encode_sequence`` computes ``s_t`` for every ``t`` in one pass with a causal
    attention mask (``[B, T, T]`` scores), which gives evaluation in one pass and
    prefix-parallel training (``layout="sequence"``) with the same objective as
    prefix augmentation. ``prefix_logits`` (prefix layout) attends from the last
    state only.

    Args:
        num_items: classes including padding 0.
        embedding_dim, units: item embedding and GRU sizes (100 / 100).
        input_dropout: dropout on input embeddings (0.25).
        decoder_dropout: dropout on ``s`` (0.5).
        target_normalizer: with ``layout="sequence"``, divide the summed loss by this
            constant (see :class:`~tfrec.models.base.SequentialRecommender`).
        **kwargs: ``batch_size``, ``bucket``, ``seed`` (see base).

    Example:

    >>> import numpy as np
    >>> m = NARM(num_items=10, embedding_dim=4, units=4)
    >>> m.score_prefix_batch({"items": np.array([[1, 2, 0]])}).shape
    (1, 10)
    """

    probabilistic = True
    causal = True

    def __init__(self, num_items, embedding_dim: int = 100, units: int = 100,
                 input_dropout: float = 0.25, decoder_dropout: float = 0.5,
                 target_normalizer=None, **kwargs):
        super().__init__(num_items, target_normalizer=target_normalizer, **kwargs)
        self.embedding_dim, self.units = int(embedding_dim), int(units)
        self.input_dropout, self.decoder_dropout = float(input_dropout), float(decoder_dropout)
        self.item_embedding = table_item_embedding(self.num_items, self.embedding_dim, self.seed)
        self.in_drop = layers.Dropout(self.input_dropout)
        self.gru = layers.GRU(self.units, return_sequences=True, reset_after=False,
                              recurrent_initializer="glorot_uniform",
                              bias_initializer=GateBiasInitializer(1.0), name="gru")
        self.attention = NARMAttention(name="local_attention")
        self.decoder = BilinearDecoder(self.item_embedding, dropout=self.decoder_dropout,
                                       name="bilinear_decoder")

    def session_representation(self, inputs, training=False):
        """``[c_local ; h_T]`` ``[B, 2 * units]`` for right-padded histories."""
        items = inputs["items"]
        mask = ops.not_equal(items, 0)
        h = self.gru(self.in_drop(self.item_embedding(items), training=training), training=training)
        last = gather_last(h, lengths_of(items))
        return self.attention(h, last, mask)  # positional: not a Keras propagated mask

    def encode_sequence(self, inputs, training=False):
        """``s_t = [sum_{j<=t} alpha_tj h_j ; h_t]`` for every position: ``[B, T, 2 * units]``."""
        items = inputs["items"]
        h = self.gru(self.in_drop(self.item_embedding(items), training=training), training=training)
        if not self.attention.built:
            self.attention.build(h.shape)
        att = self.attention
        keys = ops.matmul(h, att.a1)  # [B, T, U]
        queries = ops.matmul(h, att.a2)  # [B, T, U]
        pre = ops.sigmoid(ops.expand_dims(keys, 1) + ops.expand_dims(queries, 2))  # [B, t, j, U]
        e = ops.squeeze(ops.matmul(pre, att.v), -1)  # [B, t, j]
        T = ops.shape(items)[1]
        causal = ops.expand_dims(ops.arange(T), 1) >= ops.expand_dims(ops.arange(T), 0)
        mask = ops.logical_and(ops.expand_dims(causal, 0), ops.expand_dims(ops.not_equal(items, 0), 1))
        alpha = masked_softmax(e, mask)
        ctx = ops.matmul(alpha, h)
        return ops.concatenate([ctx, h], axis=-1)

    def decode(self, s, training=False):
        return self.decoder(s, training=training)

    def prefix_logits(self, inputs, training=False):
        return self.decoder(self.session_representation(inputs, training), training=training)

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim, "units": self.units,
                "input_dropout": self.input_dropout, "decoder_dropout": self.decoder_dropout}
