"""Attention readouts over a sequence of hidden states."""

from __future__ import annotations

import keras
from keras import layers, ops


def masked_softmax(scores, mask, axis=-1):
    """Softmax over ``axis`` with entries where ``mask`` is False given zero weight.
    Rows with no valid entry get all-zero weights.

    Masked entries never reach ``exp``: however large their scores (e.g. future keys
    of a causal dot-product attention), they cannot overflow to ``inf * 0 = NaN``.

    Example:

    >>> import numpy as np
    >>> w = masked_softmax(np.array([[0.0, 0.0, 1e4]], "float32"), np.array([[True, True, False]]))
    >>> np.round(np.asarray(w), 3).tolist()
    [[0.5, 0.5, 0.0]]
    """
    valid = ops.cast(mask, "bool")
    lowest = ops.full_like(scores, float("-inf"))
    top = ops.max(ops.where(valid, scores, lowest), axis=axis, keepdims=True)
    top = ops.stop_gradient(ops.where(ops.isfinite(top), top, ops.zeros_like(top)))  # empty rows: 0
    shifted = ops.where(valid, scores - top, ops.zeros_like(scores))
    e = ops.exp(shifted) * ops.cast(valid, scores.dtype)
    return ops.divide_no_nan(e, ops.sum(e, axis=axis, keepdims=True))


@keras.saving.register_keras_serializable(package="tfrec")
class NARMAttention(layers.Layer):
    """NARM's local encoder attention (Li et al. 2017), as the HCRNN code uses it.

    ``e_j = v . sigmoid(A1 h_j + A2 h_T)``, ``alpha = masked softmax_j(e)``,
    output ``[sum_j alpha_j h_j ; h_T]`` of size ``2 * H``.

    Args:
        units: size of the attention projection (defaults to ``H``).

    Call arguments:
        states: ``[B, T, H]`` hidden states.
        last: ``[B, H]`` the state at the last real position.
        mask: bool ``[B, T]``, True on real positions.
        return_weights: also return ``alpha`` ``[B, T]``.

    Example:

    >>> import numpy as np
    >>> att = NARMAttention()
    >>> h = np.random.rand(2, 4, 3).astype("float32")
    >>> out = att(h, h[:, -1], mask=np.ones((2, 4), bool))
    >>> tuple(out.shape)
    (2, 6)
    """

    def __init__(self, units=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True  # padding is handled by the explicit ``mask`` argument

    def compute_mask(self, *args, **kwargs):
        return None  # the pooled output has no time axis

    def build(self, states_shape, last_shape=None, mask_shape=None):
        h = states_shape[-1]
        u = self.units or h
        self.a1 = self.add_weight(shape=(h, u), initializer="glorot_uniform", name="a1")
        self.a2 = self.add_weight(shape=(h, u), initializer="glorot_uniform", name="a2")
        self.v = self.add_weight(shape=(u, 1), initializer="glorot_uniform", name="v")

    def call(self, states, last, mask=None, return_weights=False):
        q = ops.expand_dims(ops.matmul(last, self.a2), 1)
        e = ops.squeeze(ops.matmul(ops.sigmoid(ops.matmul(states, self.a1) + q), self.v), -1)
        if mask is None:
            mask = ops.ones(ops.shape(e), "bool")
        alpha = masked_softmax(e, mask)
        ctx = ops.sum(ops.expand_dims(alpha, -1) * states, axis=1)
        out = ops.concatenate([ctx, last], axis=-1)
        return (out, alpha) if return_weights else out

    def compute_output_spec(self, states, last, mask=None, return_weights=False):
        out = keras.KerasTensor((states.shape[0], 2 * states.shape[-1]), dtype=states.dtype)
        if return_weights:
            return out, keras.KerasTensor(states.shape[:2], dtype=states.dtype)
        return out

    def get_config(self):
        return {**super().get_config(), "units": self.units}
