"""HCRNN: gates against hand-computed values and an independent numpy reference,
W_d >= 0 under training, TFP KL vs closed form, padding invariance, fast loop vs
keras.layers.RNN, config/saving round trips, two-phase update, explain()."""

import math

import keras
import numpy as np
import pytest

from tfrec.data.schema import SequenceDataset, SequenceSet
from tfrec.data.vocab import Vocabulary
from tfrec.layers import BiChannelAttention, GlobalContextInference, HCRNNCell
from tfrec.models.hcrnn import HCRNN

sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731


def _build_cell(variant, D=2, H=2, K=2, A=2, **kw):
    cell = HCRNNCell(H, num_contexts=K, variant=variant, attention_units=A, **kw)
    cell.build((None, D + K))
    return cell


def _zero_cell(variant):
    """All kernels and biases 0, M = [[1, 0], [0, 3]]."""
    cell = _build_cell(variant)
    for w in cell.weights:
        w.assign(np.zeros(w.shape, "float32"))
    cell.global_context_memory.assign(np.array([[1.0, 0.0], [0.0, 3.0]], "float32"))
    return cell


def _step(cell, x, theta, c, h):
    inp = np.concatenate([x, theta])[None].astype("float32")
    c1, h1, diag = cell.step(inp, np.asarray(c, "float32")[None], np.asarray(h, "float32")[None])
    return (np.asarray(c1)[0], np.asarray(h1)[0], {k: np.asarray(v)[0] for k, v in diag.items()})


X, THETA, C0, H0 = [1.0, 1.0], [0.5, 0.5], [2.0, 2.0], [1.0, -1.0]


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_zero_weights_hand_case(variant):
    # every gate is sigmoid(0) = 0.5, beta uniform, candidate tanh(0) = 0
    c, h, d = _step(_zero_cell(variant), X, THETA, C0, H0)
    np.testing.assert_allclose(d["global_attention"], [0.5, 0.5])  # eq. 13
    np.testing.assert_allclose(d["local_gate"], [0.5, 0.5])  # eq. 15
    np.testing.assert_allclose(c, [0.5 * 2 + 0.5 * 0.5, 0.5 * 2 + 0.5 * 1.5], rtol=1e-6)  # eq. 14, 16
    np.testing.assert_allclose(d["reset_gate"], [0.5, 0.5])
    np.testing.assert_allclose(d["drift_gate"], [0.5, 0.5] if variant == 3 else [1.0, 1.0])
    np.testing.assert_allclose(h, [0.5, -0.5], rtol=1e-6)  # eq. 20, z = 0.5, h~ = 0


def test_attention_hand_case():
    cell = _zero_cell(3)
    cell.memory_key_kernel.assign(np.eye(2, dtype="float32"))
    cell.attention_v.assign(np.ones((2, 1), "float32"))
    # keys: theta_1 M_1 = [1, 0], theta_2 M_2 = 0 -> scores sig(1)+sig(0), 2 sig(0)
    _, _, d = _step(cell, X, [1.0, 0.0], C0, H0)
    s = np.array([sig(1.0) + 0.5, 1.0])
    np.testing.assert_allclose(d["global_attention"], np.exp(s) / np.exp(s).sum(), rtol=1e-6)
    # the keys scale with theta but the values are the unscaled M_k (eq. 14)
    # theta = [0, 1]: keys 0 and M_2 = [0, 3]; M_1 still contributes beta_1 * [1, 0]
    c, _, d = _step(cell, X, [0.0, 1.0], C0, H0)
    s = np.array([1.0, 0.5 + sig(3.0)])
    beta = np.exp(s) / np.exp(s).sum()
    np.testing.assert_allclose(d["global_attention"], beta, rtol=1e-6)
    np.testing.assert_allclose(c, 0.5 * np.array(C0) + 0.5 * np.array([beta[0], 3 * beta[1]]), rtol=1e-6)


def test_local_update_gates_hand_case():
    cell = _zero_cell(1)
    b = np.zeros(2 + 3 * 2, "float32")
    b[0] = math.log(3.0)  # local gate unit 0 -> 0.75
    b[2], b[3] = math.log(3.0), -math.log(3.0)  # update gate -> [0.75, 0.25]
    cell.bias.assign(b)
    c, h, d = _step(cell, X, THETA, C0, H0)
    np.testing.assert_allclose(d["local_gate"], [0.75, 0.5], rtol=1e-6)
    np.testing.assert_allclose(c, [0.25 * 2 + 0.75 * 0.5, 0.5 * 2 + 0.5 * 1.5], rtol=1e-6)
    np.testing.assert_allclose(h, [0.25 * 1.0, 0.75 * -1.0], rtol=1e-6)  # h~ = 0


@pytest.mark.parametrize("variant", [2, 3])
def test_drift_and_reset_gates_hand_case(variant):
    cell = _zero_cell(variant)
    cell.drift_kernel.assign(np.eye(2, dtype="float32"))
    cell.candidate_kernel.assign(np.eye(2, dtype="float32"))
    c, h, d = _step(cell, X, THETA, C0, H0)
    xc = np.array(X) * np.array([1.25, 1.75])  # x * c_t
    if variant == 2:  # eq. 21: the drift term enters the reset gate
        np.testing.assert_allclose(d["reset_gate"], sig(xc), rtol=1e-6)
        gated = sig(xc) * np.array(H0)
    else:  # eq. 22-24: separate drift gate, multiplied into the reset
        np.testing.assert_allclose(d["drift_gate"], sig(xc), rtol=1e-6)
        np.testing.assert_allclose(d["reset_gate"], [0.5, 0.5])
        gated = 0.5 * sig(xc) * np.array(H0)
    np.testing.assert_allclose(h, 0.5 * np.array(H0) + 0.5 * np.tanh(gated), rtol=1e-5)


def _numpy_step(cell, x, theta, c, h):
    """Independent reference of eq. 13-24 from the cell's weights (per gate blocks)."""
    W = {w.name: np.asarray(w) for w in cell.weights}
    D, H = len(c), len(h)
    Wx, b, Wh = W["input_kernel"], W["bias"], W["recurrent_kernel"]
    M = W["global_context_memory"]
    keys = (theta[:, None] * M) @ W["memory_key_kernel"]
    q = h @ Wh[:, D + 2 * H :]
    e = (sig(keys + q) @ W["attention_v"])[:, 0]
    beta = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
    g = sig(x @ Wx[:, :D] + h @ Wh[:, :D] + c @ W["context_kernel"][:, :D] + b[:D])
    c1 = (1 - g) * c + g * (beta @ M)
    z = sig(x @ Wx[:, D : D + H] + h @ Wh[:, D : D + H] + c1 @ W["update_context_kernel"] + b[D : D + H])
    pre_r = x @ Wx[:, D + H : D + 2 * H] + h @ Wh[:, D + H : D + 2 * H] + b[D + H : D + 2 * H]
    G = np.ones(H)
    if cell.variant == 1:
        r = sig(pre_r + c @ W["context_kernel"][:, D:])
    elif cell.variant == 2:
        r = sig(pre_r + (x * c1) @ W["drift_kernel"])
    else:
        G = sig((x * c1) @ W["drift_kernel"] + W["drift_bias"])
        r = sig(pre_r)
    ht = np.tanh(x @ Wx[:, D + 2 * H :] + (r * G * h) @ W["candidate_kernel"] + b[D + 2 * H :])
    return c1, (1 - z) * h + z * ht, {"local_gate": g, "reset_gate": r, "drift_gate": G,
                                      "global_attention": beta}


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_step_matches_numpy_reference(variant):
    rng = np.random.default_rng(variant)
    D, H, K = 3, 4, 5
    cell = _build_cell(variant, D=D, H=H, K=K, A=6, bias_initializer="random_normal")
    for w in cell.weights:  # non-trivial values everywhere (W_d kept >= 0)
        v = rng.normal(size=w.shape).astype("float32")
        w.assign(np.abs(v) if w.name == "drift_kernel" else v)
    x, c, h = rng.normal(size=D), rng.normal(size=D), rng.normal(size=H)
    theta = rng.dirichlet(np.ones(K))
    c1, h1, d = _step(cell, x, theta, c, h)
    rc, rh, rd = _numpy_step(cell, x, theta, c, h)
    np.testing.assert_allclose(c1, rc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h1, rh, rtol=1e-4, atol=1e-5)
    for k in rd:
        np.testing.assert_allclose(d[k], rd[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # the precomputed-projection fast path gives the same step
    inp = np.concatenate([x, theta])[None].astype("float32")
    out_raw, _ = cell(inp, [c[None].astype("float32"), h[None].astype("float32")])
    out_fast, _ = cell(cell.project_inputs(inp), [c[None].astype("float32"), h[None].astype("float32")])
    np.testing.assert_allclose(out_raw, out_fast, rtol=1e-5, atol=1e-6)


def test_padding_never_changes_states_in_keras_rnn():
    rng = np.random.default_rng(0)
    cell = HCRNNCell(4, num_contexts=3, variant=3, return_diagnostics=True)
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    x = rng.normal(size=(2, 6, 5 + 3)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], bool)
    xp = x.copy()
    xp[1, 3:] = rng.normal(size=(3, 8))  # garbage under the mask
    out, c, h = rnn(xp, mask=mask)
    ref, c_ref, h_ref = rnn(x[1:2, :3])
    np.testing.assert_allclose(out[1, :3], ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c[1], c_ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h[1], h_ref[0], rtol=1e-5, atol=1e-6)
    parts = cell.split_outputs(np.asarray(out))
    assert parts["drift_gate"].shape == (2, 6, 4) and parts["global_attention"].shape == (2, 6, 3)
    np.testing.assert_allclose(parts["global_attention"].sum(-1), 1.0, rtol=1e-5)
    assert (parts["delta_c"][0] > 0).all() and parts["delta_h"].shape == (2, 6)


TINY = dict(embedding_dim=6, hidden=5, num_contexts=3, inference_units=4)


@pytest.mark.parametrize("kw", [dict(), dict(attention="narm", variant=1), dict(layout="sequence"),
                                dict(layout="sequence", attention="narm", variant=2)])
def test_padding_never_changes_scores(kw):
    keras.utils.set_random_seed(0)
    m = HCRNN(num_items=30, **TINY, **kw)
    a = m.score_prefix_batch({"items": np.array([[3, 4, 5]], "int32")})
    b = m.score_prefix_batch({"items": np.array([[3, 4, 5, 0, 0], [7, 8, 9, 10, 11]], "int32")})
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    if m.causal:  # each position of one pass = the score of that prefix
        s = m.score_sequence_batch({"items": np.array([[7, 8, 9, 10, 11]], "int32")})
        np.testing.assert_allclose(s[0, -1], b[1], rtol=1e-5, atol=1e-5)
        p = m.score_prefix_batch({"items": np.array([[7, 8]], "int32")})
        np.testing.assert_allclose(s[0, 1], p[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["prefix", "sequence"])
def test_fast_loop_equals_keras_rnn(layout):
    keras.utils.set_random_seed(1)
    fast = HCRNN(num_items=30, layout=layout, **TINY)
    slow = HCRNN(num_items=30, layout=layout, loop="keras", **TINY)
    slow.set_weights(fast.get_weights())
    x = {"items": np.array([[3, 4, 5, 0], [7, 8, 9, 10]], "int32")}
    np.testing.assert_allclose(fast.score_prefix_batch(x), slow.score_prefix_batch(x), rtol=1e-5, atol=1e-5)


def _grads(m, x, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        logits = m(x, training=False)
        loss = m.compute_loss(x, y, logits)
    return np.asarray(logits), [None if g is None else np.asarray(tf.convert_to_tensor(g))
                                for g in tape.gradient(loss, m.trainable_variables)]


@pytest.mark.parametrize("groups", [2, 3, 7, 9])
@pytest.mark.parametrize("kw", [dict(), dict(attention="narm", variant=1)])
def test_length_groups_equal_one_group(groups, kw):
    # random-length rows in random order; 9 groups > 7 rows runs as one group
    rng = np.random.default_rng(3)
    lens = [1, 6, 2, 6, 3, 1, 5]
    items = np.zeros((7, 6), "int32")
    for i, n in enumerate(lens):
        items[i, :n] = rng.integers(1, 30, n)
    x, y = {"items": items}, rng.integers(1, 30, 7).astype("int32")
    keras.utils.set_random_seed(2)
    one = HCRNN(num_items=30, **TINY, **kw)
    grouped = HCRNN(num_items=30, length_groups=groups, **TINY, **kw)
    grouped.set_weights(one.get_weights())
    a, ga = _grads(one, x, y)
    b, gb = _grads(grouped, x, y)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert [g is None for g in ga] == [g is None for g in gb]
    assert sum(g is None for g in ga) == 2  # only sigma of q(theta), unused at inference
    for u, v in zip(ga, gb):
        if u is not None:
            np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-7)
    assert grouped.get_config()["length_groups"] == groups


def test_length_groups_errors():
    with pytest.raises(ValueError, match=r"length_groups must be an integer >= 1, got 0"):
        HCRNN(num_items=30, length_groups=0, **TINY)
    with pytest.raises(ValueError, match=r"length_groups must be an integer >= 1, got 2.5"):
        HCRNN(num_items=30, length_groups=2.5, **TINY)
    with pytest.raises(ValueError, match=r"length_groups > 1 needs the paper form"):
        HCRNN(num_items=30, length_groups=4, layout="sequence", **TINY)
    with pytest.raises(ValueError, match=r"length_groups > 1 needs the paper form"):
        HCRNN(num_items=30, length_groups=4, loop="keras", **TINY)


def test_length_groups_train_random_batches_like_one_group():
    """Training on random (unbucketed) batches: grouped and one-group models take the
    same steps (same seeds, same batches, same dropout draws)."""
    data = _tiny_data()
    weights = []
    for groups in (1, 4):
        keras.utils.set_random_seed(5)
        m = HCRNN(num_items=data.num_items, batch_size=16, bucket=False, length_groups=groups,
                  two_phase=True, seed=5, **TINY)
        m.compile(optimizer=keras.optimizers.Adam(1e-2))
        m.fit(m.make_dataset(data.train), epochs=2, verbose=0)
        weights.append(m.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


def test_kl_is_tfp_and_matches_closed_form():
    layer = GlobalContextInference(num_contexts=4, units=3, kl_weight=0.5)
    u = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    theta, (mu, sigma, kl) = layer(u, return_details=True)
    mu, sigma = np.asarray(mu), np.asarray(sigma)
    closed = 0.5 * np.sum(mu**2 + sigma**2 - np.log(sigma**2) - 1.0, axis=-1)
    np.testing.assert_allclose(np.asarray(kl), closed, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(theta), np.exp(mu) / np.exp(mu).sum(-1, keepdims=True), rtol=1e-5)
    q = layer.posterior(mu, sigma)
    assert type(q).__module__.startswith("tensorflow_probability")
    # training: reparameterised sample (stochastic) and lambda * mean KL as a layer loss
    t1 = np.asarray(layer(u, training=True))
    np.testing.assert_allclose(float(layer.losses[-1]), 0.5 * closed.mean(), rtol=1e-5)
    t2 = np.asarray(layer(u, training=True))
    assert not np.allclose(t1, t2) and np.allclose(t1.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(u)), np.asarray(layer(u)))  # mean at inference


def _tiny_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(1, 25, size=rng.integers(3, 9))) for _ in range(n)]
    mk = lambda s: SequenceSet.from_lists(s)  # noqa: E731
    vocab = Vocabulary([str(i) for i in range(1, 25)])
    return SequenceDataset(train=mk(seqs), valid=mk(seqs[:8]), test=mk(seqs[8:16]), item_vocab=vocab,
                           name="tiny")


def test_drift_kernel_nonnegative_after_training():
    keras.utils.set_random_seed(0)
    data = _tiny_data()
    m = HCRNN(num_items=data.num_items, variant=3, batch_size=16, **TINY)
    bound = np.float32(1e-12)
    before = np.asarray(m.cell.drift_kernel).copy()
    assert before.min() >= bound  # projected at build
    m.compile(optimizer=keras.optimizers.Adam(0.2))
    m.fit(m.make_dataset(data.train), epochs=2, verbose=0)
    w = np.asarray(m.cell.drift_kernel)
    assert not np.allclose(w, before)  # it was trained
    assert w.min() >= bound
    # the projection was active: large steps pushed entries that were above the bound onto it
    assert ((w == bound) & (before > bound)).any()


def test_two_phase_update():
    keras.utils.set_random_seed(0)
    data = _tiny_data()
    m = HCRNN(num_items=data.num_items, two_phase=True, batch_size=16, **TINY)
    m.compile(optimizer=keras.optimizers.Adam(1e-2))
    inf0 = [np.asarray(v).copy() for v in m.global_context.trainable_variables]
    m.fit(m.make_dataset(data.train), epochs=1, verbose=0)
    n_batches = -(-data.train.num_targets // 16)
    assert int(m.optimizer.iterations) == 2 * n_batches  # one shared Adam, two steps per batch
    assert all(not np.allclose(a, np.asarray(v)) for a, v in zip(inf0, m.global_context.trainable_variables))


def test_get_config_round_trips():
    cell = HCRNNCell(7, num_contexts=4, variant=2, attention_units=3, return_diagnostics=True)
    assert HCRNNCell.from_config(cell.get_config()).get_config() == cell.get_config()
    g = GlobalContextInference(5, 6, kl_weight=0.01)
    assert GlobalContextInference.from_config(g.get_config()).get_config() == g.get_config()
    b = BiChannelAttention(units=4, channels=("h",))
    assert BiChannelAttention.from_config(b.get_config()).get_config() == b.get_config()
    m = HCRNN(num_items=30, variant=1, attention="narm", layout="sequence", two_phase=True, **TINY)
    cfg = m.get_config()
    m2 = HCRNN.from_config(cfg)
    assert m2.get_config() == cfg and m2.causal and m2.theta == "causal"


@pytest.mark.parametrize("kw", [dict(), dict(layout="sequence", attention="narm"),
                                dict(layout="sequence", loss="bpr-max", num_negatives=4, sample_alpha=0.4,
                                     bpreg=1.5, elu_param=0.5)])
def test_keras_save_load_identical_scores(tmp_path, kw):
    keras.utils.set_random_seed(0)
    data = _tiny_data()
    m = HCRNN(num_items=data.num_items, batch_size=16, **TINY, **kw)
    m.compile(optimizer=keras.optimizers.Adam(1e-2))
    m.fit(data, epochs=1, verbose=0)
    path = str(tmp_path / "hcrnn.keras")
    m.save(path)
    m2 = keras.saving.load_model(path)
    x = {"items": np.array([[3, 4, 5, 0], [7, 8, 9, 10]], "int32")}
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)  # bit-identical weights
    # identical scores up to float32 round-off of the (multi-threaded) kernels
    np.testing.assert_allclose(m.score_prefix_batch(x), m2.score_prefix_batch(x), rtol=1e-5, atol=1e-7)
    assert m2.get_config() == m.get_config()


def test_registry_test_config_trains_and_evaluates():
    from tfrec.evaluation import evaluate
    from tfrec.models import registry

    data = _tiny_data()
    spec = registry.get("hcrnn")
    m = registry.build("hcrnn", data, **spec.test_config)
    m.compile(optimizer=keras.optimizers.Adam(1e-2))
    m.fit(data, epochs=1, verbose=0, validation_protocol="hcrnn")
    assert m.best_epoch == 1
    out = evaluate(m, data.test, protocol="hcrnn")
    assert out["targets"] == data.test.num_targets and 0 <= out["recall@20"] <= 100


def test_explain_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    from tfrec.models.hcrnn import plot_explanation

    keras.utils.set_random_seed(0)
    m = HCRNN(num_items=30, **TINY)
    e = m.explain([3, 4, 5, 6], top_items=4, top_contexts=2)
    assert e["theta"].shape == (3,) and np.isclose(e["theta"].sum(), 1.0, atol=1e-5)
    assert e["drift_gate"].shape == (4, 5) and e["global_attention"].shape == (4, 3)
    assert e["alpha_c"].shape == (4,) and np.isclose(e["alpha_h"].sum(), 1.0, atol=1e-5)
    assert len(e["context_items"][e["top_contexts"][0]]) == 4
    # explain's step-by-step diagnostics agree with the model's own scores
    s = m.score_prefix_batch({"items": np.array([[3, 4, 5, 6]], "int32")})[0]
    assert e["recommended"][0] == int(np.argmax(s))
    fig = plot_explanation(e)
    assert len(fig.axes) == 4


# ------------------------------------------------ GRU4Rec training recipe (sampled losses)
def _np_sampled_loss(y, y_pred, negatives, loss, bpreg=1.0, elu=0.0, normalizer=None):
    """Independent numpy reference: rows = target positions (row-major), columns =
    [targets, negatives], a row's negatives = every other column whose item differs
    from its target."""
    y = np.asarray(y).reshape(-1)
    rows = np.asarray(y_pred, np.float64).reshape(len(y), -1)[y != 0]
    t = y[y != 0]
    cols = np.concatenate([t, negatives])
    out = []
    for i, ti in enumerate(t):
        r = rows[i, cols]
        if elu and loss != "sampled_softmax":
            r = np.where(r > 0, r, elu * (np.exp(r) - 1))
        neg = np.array([j != i and cols[j] != ti for j in range(len(cols))])
        if loss == "sampled_softmax":
            keep = neg.copy()
            keep[i] = True
            out.append(np.log(np.exp(r[keep]).sum()) - r[i])
            continue
        rn = r[neg]
        s = np.exp(rn - rn.max())
        s /= s.sum()
        if loss == "bpr_max":
            out.append(-np.log((s * sig(r[i] - rn)).sum() + 1e-24) + bpreg * (s * rn**2).sum())
        else:  # top1_max
            out.append((s * (sig(rn - r[i]) + sig(rn**2))).sum())
    return np.sum(out) / (normalizer if normalizer else len(t))


@pytest.mark.parametrize("loss,kw", [("bpr-max", dict(bpreg=1.95)), ("bpr-max", dict(bpreg=0.5, elu_param=0.5)),
                                     ("sampled-softmax", dict(elu_param=0.5)), ("top1-max", {})])
@pytest.mark.parametrize("layout,normalizer", [("sequence", None), ("sequence", 4.0), ("prefix", None)])
def test_sampled_loss_equals_numpy(loss, kw, layout, normalizer):
    rng = np.random.default_rng(3)
    m = HCRNN(num_items=30, layout=layout, loss=loss, num_negatives=3, target_normalizer=normalizer, **TINY, **kw)
    if layout == "sequence":  # target 3 twice (a mini-batch duplicate) and in the negatives (accidental hit)
        y = np.array([[3, 4, 0], [5, 3, 7]], "int32")
    else:
        y = np.array([3, 4, 0, 3], "int32")
    y_pred = (3 * rng.normal(size=y.shape + (30,))).astype("float32")
    negatives = np.array([0, 9, 3, 11], "int32")
    got = float(m.sampled_loss(y, y_pred, negatives=negatives))
    name = m.loss_name
    want = _np_sampled_loss(y, y_pred, negatives, name, kw.get("bpreg", 1.0), kw.get("elu_param", 0.0),
                            normalizer if layout == "sequence" else None)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # without removing accidental hits the duplicates count as negatives: a different value
    m2 = HCRNN(num_items=30, layout=layout, loss=loss, num_negatives=3, target_normalizer=normalizer,
               remove_accidental_hits=False, **TINY, **kw)
    assert not np.isclose(float(m2.sampled_loss(y, y_pred, negatives=negatives)), got)
    # compute_loss adds the layer losses (the KL term) to it
    m(({"items": np.array([[1, 2, 3]], "int32")}), training=True)
    kl = sum(float(v) for v in m.losses)
    assert kl > 0
    total = float(m.compute_loss(y=y, y_pred=y_pred))  # draws its own negatives: compare bounds
    assert np.isfinite(total) and total != got


def test_default_cross_entropy_path_unchanged():
    from tfrec.models.base import masked_sparse_ce

    rng = np.random.default_rng(0)
    m = HCRNN(num_items=30, layout="sequence", target_normalizer=4.0, **TINY)
    assert m.loss_name == "cross_entropy" and not m.sampled_training and m.sample_logits is None
    y = np.array([[3, 4, 0], [5, 3, 7]], "int32")
    y_pred = rng.normal(size=(2, 3, 30)).astype("float32")
    lp = y_pred - np.log(np.exp(y_pred).sum(-1, keepdims=True))
    ce = -np.take_along_axis(lp, y[..., None], -1)[..., 0]
    want = (ce * (y != 0)).sum() / 4.0
    np.testing.assert_allclose(float(m.compute_loss(y=y, y_pred=y_pred)), want, rtol=1e-5)
    np.testing.assert_allclose(float(masked_sparse_ce(y, y_pred, normalizer=4.0)), want, rtol=1e-5)
    # no sampler weight, no extra variables in the default model
    names = [w.path for w in m.weights]
    assert not any("sample_logits" in n for n in names)
    sampled = HCRNN(num_items=30, layout="sequence", loss="bpr-max", **TINY)
    assert len(sampled.weights) == len(m.weights) + 1


def test_sampled_options_get_config_round_trip():
    m = HCRNN(num_items=30, layout="sequence", loss="bpr-max", num_negatives=7, sample_alpha=0.4,
              bpreg=1.95, elu_param=0.5, remove_accidental_hits=False, **TINY)
    cfg = m.get_config()
    assert (cfg["loss"], cfg["num_negatives"], cfg["sample_alpha"], cfg["bpreg"], cfg["elu_param"],
            cfg["remove_accidental_hits"]) == ("bpr_max", 7, 0.4, 1.95, 0.5, False)
    m2 = HCRNN.from_config(cfg)
    assert m2.get_config() == cfg and m2.sampled_training
    assert HCRNN.from_config({**cfg, "loss": "sampled-softmax"}).loss_name == "sampled_softmax"
    with pytest.raises(ValueError):
        HCRNN(num_items=30, loss="hinge", **TINY)
    # the draw: padding first, then num_negatives items, never padding
    neg = np.asarray(m.draw_negatives())
    assert neg.shape == (8,) and neg[0] == 0 and (neg[1:] > 0).all()


def test_sampled_loss_overfits_tiny_data():
    """bpr-max with popularity-sampled negatives learns a deterministic successor
    pattern (item i -> i + 1): the top-1 full-ranking prediction becomes the next item."""
    keras.utils.set_random_seed(0)
    seqs = [list(range(s, s + 6)) for s in range(1, 15)] * 3
    mk = lambda s: SequenceSet.from_lists(s)  # noqa: E731
    data = SequenceDataset(train=mk(seqs), valid=mk(seqs[:14]), test=mk(seqs[:14]),
                           item_vocab=Vocabulary([str(i) for i in range(1, 21)]), name="succ")
    m = HCRNN(num_items=data.num_items, layout="sequence", loss="bpr-max", num_negatives=10, sample_alpha=0.5,
              bpreg=0.5, batch_size=14, input_dropout=0.0, theta_dropout=0.0, output_dropout=0.0, **TINY)
    m.compile(optimizer=keras.optimizers.Adam(0.05))
    hist = m.fit(data, epochs=25, verbose=0, validation_protocol="hcrnn", patience=None, restore_best=False)
    counts = data.train.item_counts(data.num_items)  # item 20 and padding never occur
    seen = counts > 0
    logits = np.asarray(m.sample_logits)
    np.testing.assert_allclose(logits[seen], np.log(counts[seen] ** 0.5 / (counts[seen] ** 0.5).sum()), rtol=1e-5)
    assert (logits[~seen] <= -1e8).all() and not seen[0]
    x = {"items": np.array([list(range(s, s + 5)) for s in range(1, 15)], "int32")}
    s = m.score_sequence_batch(x)
    pred = s.argmax(-1)
    assert (pred == x["items"] + 1).mean() >= 0.85, pred - x["items"]
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
