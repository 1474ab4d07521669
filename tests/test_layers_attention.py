"""masked_softmax: masked entries get zero weight and can never turn into NaN."""

import numpy as np
import tensorflow as tf

from tfrec.layers.attention import masked_softmax


def test_masked_softmax_ignores_huge_masked_scores_in_values_and_gradients():
    # a masked score far above the valid ones used to overflow: exp(1e4) * 0 = NaN
    scores = tf.Variable([[1.0, 2.0, 1e4], [3.0, 1e5, 3.0], [5.0, 6.0, 7.0]])
    mask = np.array([[True, True, False], [True, False, True], [False, False, False]])
    with tf.GradientTape() as tape:
        w = masked_softmax(scores, mask)
        loss = tf.reduce_sum(w * tf.constant([[1.0, 2.0, 3.0]]))
    e = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    np.testing.assert_allclose(w.numpy(), [[e[0], e[1], 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 0.0]], rtol=1e-6)
    g = tape.gradient(loss, scores).numpy()
    assert np.isfinite(g).all()
    assert g[0, 2] == 0.0 and g[1, 1] == 0.0 and (g[2] == 0.0).all()
    # gradient of the valid entries = softmax Jacobian: w_i (v_i - sum_j w_j v_j)
    np.testing.assert_allclose(g[0, :2], e * (np.array([1.0, 2.0]) - (e * [1.0, 2.0]).sum()), rtol=1e-5)


def test_masked_softmax_matches_softmax_without_mask():
    s = np.random.default_rng(0).normal(size=(4, 7)).astype("float32")
    np.testing.assert_allclose(np.asarray(masked_softmax(s, np.ones_like(s, bool))),
                               tf.nn.softmax(s).numpy(), rtol=1e-6)
