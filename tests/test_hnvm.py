"""HNVM: latent layers (TFP), the session-level bound (eq. 19), the hierarchy layout,
and the model through the tfrec interfaces. Tiny sizes: the whole file runs in well
under a minute on a shared CPU."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_probability")

from tfrec.data import SequenceSet, simulate_sessions  # noqa: E402
from tfrec.data.hierarchy import (  # noqa: E402
    SessionLayout, evaluate_next_session, history_to_sessions, next_session_dataset, session_index,
    set_ranking_metrics, split_sessions, user_layout, user_sessions,
)
from tfrec.data.pipelines import prefix_batches  # noqa: E402
from tfrec.layers import GaussianLatent, HNVMDecoderCell, diag_normal  # noqa: E402
from tfrec.models.hnvm import HNVM  # noqa: E402

TINY = dict(embedding_dim=8, hidden=8, latent_dim=4, user_latent_dim=3, mlp_units=8, dropout=0.0,
            max_session_length=5, max_context_sessions=6, batch_size=32)


@pytest.fixture(scope="module")
def sim():
    return simulate_sessions(num_users=120, seed=3)


def _model(data, **kw):
    keras.utils.set_random_seed(0)
    m = HNVM.from_dataset(data, **{**TINY, **kw})
    m.build()
    return m


def _rows(data, C=6, S=5, n=16):
    lay = SessionLayout(data.train, max_session_length=S, max_context_sessions=C)
    return lay, lay.batch(np.arange(min(n, len(lay))))[0]


def _closed_form_kl(mq, sq, mp, sp):
    """KL(N(mq, sq^2) || N(mp, sp^2)) summed over the last axis (eq. 22 terms)."""
    return 0.5 * np.sum(np.log(sp**2 / sq**2) + (sq**2 + (mq - mp) ** 2) / sp**2 - 1.0, axis=-1)


# ------------------------------------------------------------------ layers
def test_gaussian_latent_scale_and_kl_match_closed_form():
    lat = GaussianLatent(3, hidden_units=5, variance_scale=0.05)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    loc, scale = lat(x)
    # scale^2 = 0.05 * exp(logvar): recover logvar from the output layer directly
    raw = lat.out(lat.hidden[0](x)).numpy()
    np.testing.assert_allclose(scale.numpy() ** 2, 0.05 * np.exp(raw[:, 3:]), rtol=1e-5)
    q, p = diag_normal(loc, scale), diag_normal(loc * 0.5 + 1.0, scale * 2.0)
    import tensorflow_probability as tfp

    kl = tfp.distributions.kl_divergence(q, p).numpy()
    ref = _closed_form_kl(loc.numpy(), scale.numpy(), loc.numpy() * 0.5 + 1.0, scale.numpy() * 2.0)
    np.testing.assert_allclose(kl, ref, rtol=1e-5)
    assert np.all(kl > 0)


def test_decoder_cell_is_a_conditioned_gru():
    cell = HNVMDecoderCell(4, condition_dim=3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5)).astype("float32")
    c = rng.normal(size=(2, 3)).astype("float32")
    h = rng.normal(size=(2, 4)).astype("float32")
    out, _ = cell(np.concatenate([x, c], 1), [h])
    W, V, U, b = (w.numpy() for w in (cell.kernel, cell.condition_kernel, cell.recurrent_kernel, cell.bias))
    g = x @ W + c @ V + b
    r_h = h @ U
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    u = sig(g[:, :4] + r_h[:, :4])
    r = sig(g[:, 4:8] + r_h[:, 4:8])
    n = np.tanh(g[:, 8:] + r * r_h[:, 8:])
    np.testing.assert_allclose(out.numpy(), u * h + (1 - u) * n, rtol=1e-5, atol=1e-6)
    # the condition changes the output; config round-trips
    out2, _ = cell(np.concatenate([x, c + 1.0], 1), [h])
    assert not np.allclose(out.numpy(), out2.numpy())
    clone = HNVMDecoderCell.from_config(cell.get_config())
    assert clone.units == 4 and clone.condition_dim == 3


# -------------------------------------------------------------- hierarchy
def test_session_rule_gap_and_cap():
    d = np.array([np.inf, 1, 1, 1, 5000, 1, 1])
    sid, pos = session_index(d, gap=3600, max_session_length=3)
    assert sid.tolist() == [0, 0, 0, 1, 2, 2, 2] and pos.tolist() == [0, 1, 2, 0, 0, 1, 2]
    assert [s.tolist() for s in split_sessions(np.arange(1, 8), d, 3600, 3)] == [[1, 2, 3], [4], [5, 6, 7]]


@pytest.mark.parametrize("mode", ["continue", "new", "query_gap"])
def test_in_graph_sessions_match_numpy_layout(sim, mode):
    C, S = 3, 4
    new_session = mode == "new"
    if True:
        x, _ = next(prefix_batches(sim.test, 64, features=("items", "deltas", "next_deltas")))
        L_all = (x["items"] != 0).sum(1)
        gap_next = x["next_deltas"][np.arange(len(L_all)), np.maximum(L_all - 1, 0)]
        ctx, cur = history_to_sessions(x["items"], x["deltas"], 3600, S, C, new_session=new_session,
                                       next_delta=gap_next if mode == "query_gap" else None)
        if mode == "query_gap":  # the batch has both kinds of targets
            assert (gap_next > 3600).any() and (gap_next <= 3600).any()
        for b in range(len(x["items"])):
            L = int((x["items"][b] != 0).sum())
            it, d = x["items"][b, :L], x["deltas"][b, :L]
            nxt = {"continue": 0.0, "new": np.inf, "query_gap": gap_next[b]}[mode]
            ss = split_sessions(np.append(it, -1), np.append(d, nxt), 3600, S)
            cur_ref, prev = ss[-1][:-1], ss[:-1]
            exp = np.zeros((C, S), np.int32)
            for j, s in enumerate(prev[-C:]):
                exp[C - len(prev[-C:]) + j, : len(s)] = s
            assert (ctx.numpy()[b] == exp).all()
            assert cur.numpy()[b, : len(cur_ref)].tolist() == cur_ref.tolist()
            assert (cur.numpy()[b, len(cur_ref):] == 0).all()
            if new_session:
                assert len(cur_ref) == 0


def test_next_session_split_holds_out_last_sessions(sim):
    ns = next_session_dataset(sim, gap=3600, max_session_length=5)
    for s in range(len(ns.test)):
        sessions = user_sessions(ns.test.subset([s]), 3600, 5)[0]
        last = ns.test.sequence(s)[ns.test.target_start[s]:]
        assert last.tolist() == sessions[-1].tolist()
        assert ns.valid.sequence(s)[ns.valid.target_start[s]:].tolist() == sessions[-2].tolist()
        assert ns.train.lengths[s] == sum(len(x) for x in sessions[:-2])


def test_set_metrics_precision_recall_mrr():
    s = np.array([[0.0, 0.9, 0.8, 0.1, 0.7, 0.3], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    m = set_ranking_metrics(s, [np.array([2, 4, 5]), np.array([1])], ks=[3])
    # row 0: top-3 = 1, 2, 4 -> hits 2 (first at rank 2); row 1: top-3 = 5, 4, 3 -> no hit
    assert m["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["recall@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 0) / 2)
    # a tie with a non-target ranks the target below it
    m = set_ranking_metrics(np.array([[0.0, 1.0, 1.0]]), [np.array([2])], ks=[1])
    assert m["recall@1"] == 0.0


def test_query_gap_decides_new_session_at_scoring(sim):
    """With ``use_query_gap`` the next item opens a new session exactly when the gap
    from the last history event to the target exceeds ``gap`` (then the scores are
    the next-session scores); otherwise it continues the last session."""
    m = _model(sim)
    assert "next_deltas" in m.input_features
    x, _ = next(prefix_batches(sim.test, 64, features=m.input_features))
    L = (x["items"] != 0).sum(1)
    new = x["next_deltas"][np.arange(len(L)), L - 1] > m.gap
    assert new.any() and (~new).any()
    s = m.score_prefix_batch(x)
    cont = m.score_prefix_batch({k: v for k, v in x.items() if k != "next_deltas"})
    fresh = m.score_next_session_batch(x)
    np.testing.assert_allclose(s[new], fresh[new], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s[~new], cont[~new], rtol=1e-5, atol=1e-5)
    assert not np.allclose(s[new], cont[new])
    off = _model(sim, use_query_gap=False)
    assert "next_deltas" not in off.input_features
    np.testing.assert_allclose(off.score_prefix_batch(x), cont, rtol=1e-5, atol=1e-5)


def test_deduplicated_session_encoding_is_exact(sim):
    """``encode_sessions`` encodes each distinct session once: same summaries and
    same gradients as running the encoder GRU on every row."""
    m = _model(sim)
    _, x = _rows(sim, n=24)
    ctx = tf.constant(x["context"])
    assert len(np.unique(x["context"].reshape(-1, 5), axis=0)) < 24 * 6  # empty slots repeat
    w = [v.value for v in m.encoder.trainable_variables] + [m.item_embedding.embeddings.value]

    def naive():
        flat = tf.reshape(ctx, [-1, 5])
        h = m.encoder(m.item_embedding(flat), mask=flat != 0)
        return tf.reshape(h, [24, 6, -1])

    with tf.GradientTape(persistent=True) as tape:
        a, b = m.encode_sessions(ctx), naive()
        la, lb = tf.reduce_sum(tf.sin(a)), tf.reduce_sum(tf.sin(b))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for ga, gb in zip(tape.gradient(la, w), tape.gradient(lb, w)):
        np.testing.assert_allclose(tf.convert_to_tensor(ga).numpy(), tf.convert_to_tensor(gb).numpy(),
                                   rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------- the bound
def test_kl_terms_equal_closed_form_gaussian_kl(sim):
    m = _model(sim)
    _, x = _rows(sim)
    t = m.session_terms(x, sample=False)
    for q, p, kl in ((t["q_z"], t["p_z"], t["kl_z"]), (t["q_e"], t["p_e"], t["kl_e"])):
        ref = _closed_form_kl(q.mean().numpy(), q.stddev().numpy(), p.mean().numpy(), p.stddev().numpy())
        np.testing.assert_allclose(kl.numpy(), ref, rtol=1e-4, atol=1e-6)
        assert np.all(kl.numpy() >= 0)
    # the training loss adds exactly kl_weight * sum(kl_z + kl_e / N_u) / #items
    m(x, training=False)
    y = x["session"]
    expect = (t["kl_z"].numpy() + t["kl_e"].numpy() / x["num_sessions"]).sum() / (y != 0).sum()
    np.testing.assert_allclose(float(m.losses[0]), expect, rtol=1e-4)


@pytest.mark.parametrize("variant", [{}, {"use_user_latent": False}, {"use_session_latent": False}])
def test_bound_decomposes_per_session_eq19(sim, variant):
    """Sequence-level ELBO (one pass over all sessions, eq. 18) equals the sum of the
    conditional session-level bounds (session-level batches, eq. 19) plus F(a^u)."""
    S = 5
    m = _model(sim, **variant)
    lay = SessionLayout(sim.train, max_session_length=S, max_context_sessions=8)
    users = [u for u in range(len(lay.sessions)) if 2 <= len(lay.sessions[u]) <= 8][:4]
    N = max(len(lay.sessions[u]) for u in users)
    blocks = np.zeros((len(users), N, S), np.int32)
    for i, u in enumerate(users):
        blocks[i, : len(lay.sessions[u])] = user_layout(lay.sessions[u], S)
    uid = sim.train.users[users]
    seq = m.sequence_elbo(blocks, uid)
    rows = np.flatnonzero(np.isin(lay.row_seq, users))
    x, _ = lay.batch(rows)
    sb = m.session_bound(x)
    for i, u in enumerate(users):
        mine = lay.row_seq[rows] == u
        assert mine.sum() == len(lay.sessions[u])
        total = sb["bound"].numpy()[mine].sum() + sb["user_term"].numpy()[mine][0]
        np.testing.assert_allclose(seq["elbo"].numpy()[i], total, rtol=1e-4)
        # and per session: sequence-pass terms equal the session-batch terms in order
        order = np.argsort(lay.row_session[rows][mine])
        np.testing.assert_allclose(seq["log_likelihood"].numpy()[i, : mine.sum()],
                                   sb["log_likelihood"].numpy()[mine][order], rtol=1e-4)
    if not variant.get("use_user_latent", True):
        assert np.all(sb["user_term"].numpy() == 0)
    if not variant.get("use_session_latent", True):
        assert np.all(sb["kl_z"].numpy() == 0)


def test_gradients_flow_through_reparameterised_samples(sim):
    m = _model(sim)
    _, x = _rows(sim)
    y = tf.constant(x["session"])
    post = m.z_posterior.out.kernel  # [hidden, 2 * D_z]: loc columns, then log-variance columns
    D = m.latent_dim

    def grads(sample):
        with tf.GradientTape() as tape:
            t = m.session_terms(x, sample=sample, training=False)
            nll = -tf.reduce_sum(m._log_likelihood(y, t["logits"]))  # reconstruction only
            kl_z = tf.reduce_sum(t["kl_z"])  # E_q(e)[KL(q(z)||p(z|e))]: e enters through p(z|e)
        g_post = tape.gradient(nll, post)
        with tf.GradientTape() as tape2:
            t = m.session_terms(x, sample=sample, training=False)
            kl_z = tf.reduce_sum(t["kl_z"])
        g_e = tape2.gradient(kl_z, m.e_posterior.out.kernel)
        return g_post.numpy(), g_e.numpy()

    g_post, g_e = grads(True)
    assert np.all(np.isfinite(g_post)) and np.all(np.isfinite(g_e))
    # the log-variance columns only reach the objective through z = mu + sigma * eps
    assert np.abs(g_post[:, D:]).sum() > 0 and np.abs(g_post[:, :D]).sum() > 0
    E = m.user_latent_dim
    assert np.abs(g_e[:, E:]).sum() > 0 and np.abs(g_e[:, :E]).sum() > 0  # e = mu + sigma * eps too
    g_post_mean, g_e_mean = grads(False)
    assert np.abs(g_post_mean[:, D:]).sum() == 0  # no sampling -> no path to the variances
    assert np.abs(g_e_mean[:, E:]).sum() == 0
    # samples are random, means are not
    a = m.session_terms(x, sample=True)["z"].numpy()
    b = m.session_terms(x, sample=True)["z"].numpy()
    assert not np.allclose(a, b)


# ------------------------------------------------------------ the model
def test_fit_score_save_load_and_next_session(sim, tmp_path):
    m = _model(sim, kl_anneal_steps=5)
    m.compile(optimizer=keras.optimizers.Adam(0.01))
    hist = m.fit(sim, epochs=2, monitor="recall@5", verbose=0)
    assert np.isfinite(hist.history["loss"]).all() and m.best_epoch in (1, 2)
    x, _ = next(prefix_batches(sim.test, 16, features=m.input_features))
    s = m.score_prefix_batch(x)
    assert s.shape == (len(x["items"]), sim.num_items) and np.isfinite(s).all()
    # a new session is decoded differently from a continued one
    assert not np.allclose(s, m.score_next_session_batch(x))
    path = str(tmp_path / "hnvm.keras")
    m.save(path)
    m2 = keras.saving.load_model(path)
    np.testing.assert_allclose(m2.score_prefix_batch(x), s, rtol=1e-4, atol=1e-5)
    assert m2.get_config() == m.get_config()
    ns = next_session_dataset(sim, gap=3600, max_session_length=5)
    out = evaluate_next_session(m, ns.test, ks=(5,))
    assert 0 <= out["precision@5"] <= out["recall@5"] * 5 + 1e-9 and out["users"] == len(ns.test)


def test_learns_cross_session_pattern():
    """Simulated users move to item+1 at every new session: the next session's item
    is predictable only across sessions. HNVM must clearly beat popularity."""
    from tfrec.data import log_to_dataset
    from tfrec.data.simulators import simulate_sessions_log

    data = log_to_dataset(simulate_sessions_log(num_users=300, seed=0), split="leave_last_out")
    ns = next_session_dataset(data, gap=3600, max_session_length=5, min_sessions=3)
    m = _model(ns, embedding_dim=16, hidden=16, mlp_units=16, max_context_sessions=4, kl_anneal_steps=20)
    m.compile(optimizer=keras.optimizers.Adam(0.01))
    m.fit(ns, epochs=6, verbose=0)
    got = evaluate_next_session(m, ns.test, ks=(5,))["recall@5"]
    counts = np.bincount(ns.train.items, minlength=ns.num_items).astype(float)
    pop = evaluate_next_session(_Pop(counts), ns.test, ks=(5,))["recall@5"]
    assert got > pop + 0.2, (got, pop)


class _Pop:
    input_features = ("items",)

    def __init__(self, counts):
        self.counts = counts

    def score_prefix_batch(self, x):
        return np.tile(self.counts, (len(x["items"]), 1))


def test_registry_and_demographics(sim):
    from tfrec.models import registry

    spec = registry.get("hnvm")
    assert spec.cls is HNVM and "loss" in spec.model_config
    with pytest.raises(ValueError):
        HNVM(num_items=10, loss="top1")
    sim_feat = simulate_sessions(num_users=30, seed=1)
    sim_feat.user_features["gender"] = (np.arange(sim_feat.num_users) % 2 + 1).astype(np.int32)
    m = HNVM.from_dataset(sim_feat, use_demographics=True, **TINY)
    m.build()
    assert m.user_feature_sizes == (3,)
    assert m.user_attribute_table.numpy()[:, 0].tolist() == sim_feat.user_features["gender"].tolist()
    a = m.attributes(np.array([1, 2])).numpy()
    m2 = HNVM.from_dataset(sim_feat, **TINY)
    m2.build()
    assert m2.user_feature_sizes == () and a.shape == (2, TINY["embedding_dim"])


def test_sequenceset_without_times_is_one_stream():
    s = SequenceSet.from_lists([[1, 2, 3, 4, 5, 6, 7]], users=[1])
    lay = SessionLayout(s, max_session_length=3, max_context_sessions=2)
    assert [x.tolist() for x in lay.sessions[0]] == [[1, 2, 3], [4, 5, 6], [7]]
