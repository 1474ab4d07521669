"""HNVM: Hierarchical Neural Variational Model (Xiao, Liang & Meng, WWW 2019).

A user's history is a sequence of sessions ``s_1..s_N`` (cut by inactivity, see
:mod:`tfrec.data.hierarchy`). Three GRUs and two Gaussian latents:

* encoder GRU summarises a session (eq. 9); context GRU runs over the summaries,
  ``h^con_n`` (eq. 10); decoder GRU generates session ``s_n`` from
  ``[h^con_{n-1}; z_n]`` (eq. 11, :class:`tfrec.layers.HNVMDecoderCell`);
* general preference ``e^u``: prior ``p(e^u|a^u)`` and posterior ``q(e^u|a^u)``
  from user attributes ``a^u`` (one-hot user id as in the paper, optionally plus
  demographics) (eq. 6, 14);
* long-term preference ``z_n``: conditional prior ``p(z_n|s_<n, e^u)`` from a
  two-layer MLP over ``[h^con_{n-1}; e^u]`` (eq. 5, 12), posterior
  ``q(z_n|s_<n, s_n)`` from ``[h^con_{n-1}; enc(s_n)]`` (eq. 15-16).

Training maximises the conditional session-level bound (eq. 19/22) on
session-level mini-batches: for a session ``n`` of user ``u``

    L(s_n|a^u) = E_q(z_n)[log p(s_n|z_n, s_<n)] - E_q(e^u)[KL(q(z_n) || p(z_n|s_<n, e^u))]

and the user term ``F(a^u) = -KL(q(e^u|a^u) || p(e^u|a^u))`` is spread over the
user's ``N_u`` sessions (each row carries ``F/N_u``), so the sum over all rows of
an epoch is the full ELBO (eq. 18). KL terms are TFP's analytic Gaussian KLs; the
expectations use one reparameterised sample; the KL weight is annealed linearly
from 0 to 1 (``kl_anneal_steps``). The loss per batch is ``-(sum of row bounds) /
(number of items)``. ``loss="bpr"`` (the paper's choice) replaces
``log p(i_t|...)`` by the BPR objective against ``bpr_negatives`` uniformly
sampled items; ``loss="ce"`` keeps the softmax log-likelihood.

Scoring a plain history (``items``, ``deltas``, ``user``; the tfrec Recommender
interface): the history is cut into sessions in-graph
(:func:`tfrec.data.hierarchy.history_to_sessions`); whether the next item
continues the last session or opens a new one is decided by the gap from the
last history event to the request (``next_deltas``, known at serving time, as
HRNN-meta/HGRU use it; without it the next item continues the last session);
``e^u`` is the posterior mean, ``z_n`` the prior mean, and the decoder scores
the next position. ``score_next_session_batch``
decodes the first item of a new session instead (next-session task).

Ablations (RQ2): ``use_user_latent=False`` drops ``e^u`` (``p(z_n|s_<n)``);
``use_session_latent=False`` makes ``z_n`` deterministic (the prior mean; no KL
on ``z``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
from keras import layers, ops

from tfrec.data.hierarchy import (
    DEFAULT_GAP, DEFAULT_MAX_SESSION_LENGTH, SessionLayout, history_to_sessions,
)
from tfrec.data.pipelines import to_tf_dataset
from tfrec.data.schema import SequenceSet
from tfrec.layers.hnvm import GaussianLatent, HNVMDecoderCell, diag_normal
from tfrec.models.base import SequentialRecommender
from tfrec.models.registry import register

LOSSES = ("bpr", "ce")


def _scale_for_replicas(loss):
    try:
        from tfrec.models.base import scale_for_replicas
    except ImportError:  # older base without distribution support
        return loss
    return scale_for_replicas(loss)


@register(
    "hnvm",
    model_config={"embedding_dim": 64, "hidden": 100, "latent_dim": 32, "user_latent_dim": 32,
                  "mlp_units": 100, "dropout": 0.1, "loss": "ce", "batch_size": 256},
    fit_config={"epochs": 30, "patience": 5, "monitor": "recall@5", "learning_rate": 1e-3},
    test_config={"embedding_dim": 8, "hidden": 8, "latent_dim": 4, "user_latent_dim": 4,
                 "mlp_units": 8, "max_context_sessions": 3, "max_session_length": 5, "batch_size": 64},
    description="HNVM: hierarchical GRUs with Gaussian general (e^u) and long-term (z_n) latents",
)
@keras.saving.register_keras_serializable(package="tfrec")
class HNVM(SequentialRecommender):
    """Hierarchical Neural Variational Model (session-level ELBO training).

    Args:
        num_items: item classes including padding 0.
        num_users: user index range (``a^u`` is the one-hot user id; 0 = unknown).
        user_feature_sizes: cardinalities of extra categorical user attributes
            (demographics), in the column order of ``user_attributes``; empty = id only.
        user_attributes: optional int table ``[num_users, len(user_feature_sizes)]``
            (not part of the config; stored as a non-trainable weight).
        embedding_dim: item (and attribute) embedding size.
        hidden: size of the encoder, context and decoder GRUs.
        latent_dim, user_latent_dim: ``D_z`` and ``D_e``.
        mlp_units: hidden width of the latent MLPs.
        dropout: dropout on GRU outputs (0.1 in the paper).
        variance_scale: factor on prior/posterior variances (0.05 in the paper).
        kl_anneal_steps: training steps over which the KL weight rises 0 -> 1
            (0 = always 1).
        loss: ``"bpr"`` (paper) or ``"ce"``.
        bpr_negatives: uniformly sampled negatives per target for BPR.
        use_user_latent, use_session_latent: ablation switches.
        gap, max_session_length, max_context_sessions: the session rule and the
            number of earlier sessions the context GRU sees (truncation keeps memory
            bounded for long histories).
        use_query_gap: next-item scoring reads ``next_deltas`` (the time from the
            last history event to the request, known when the request is served) to
            decide whether the next item continues the last session or opens a new
            one. A caller with timestamps only gives ``query_deltas`` ``[B]`` instead
            (the SavedModel export computes it from its ``query_timestamp`` input);
            with neither, the next item continues the last session.

    Example:

    >>> from tfrec.data import simulate_sessions
    >>> data = simulate_sessions(num_users=50)
    >>> model = HNVM.from_dataset(data, hidden=8, embedding_dim=8)  # doctest: +SKIP
    >>> model.compile(optimizer="adam"); model.fit(data, epochs=1)  # doctest: +SKIP
    """

    input_features = ("items", "deltas", "user")
    causal = False

    def __init__(self, num_items: int, num_users: int = 1, user_feature_sizes: Sequence[int] = (),
                 user_attributes=None, embedding_dim: int = 64, hidden: int = 100, latent_dim: int = 32,
                 user_latent_dim: int = 32, mlp_units: int = 100, dropout: float = 0.1,
                 variance_scale: float = 0.05, kl_anneal_steps: int = 1000, loss: str = "ce",
                 bpr_negatives: int = 128, use_user_latent: bool = True, use_session_latent: bool = True,
                 gap: float = DEFAULT_GAP, max_session_length: int = DEFAULT_MAX_SESSION_LENGTH,
                 max_context_sessions: int = 10, use_query_gap: bool = True, batch_size: int = 256,
                 seed: int = 0, layout: str = "prefix", bucket: bool = False, **kwargs):
        super().__init__(num_items=num_items, layout=layout, batch_size=batch_size, bucket=bucket,
                         seed=seed, **kwargs)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.num_users = max(int(num_users), 1)
        self.user_feature_sizes = tuple(int(s) for s in user_feature_sizes)
        self.embedding_dim, self.hidden = int(embedding_dim), int(hidden)
        self.latent_dim, self.user_latent_dim = int(latent_dim), int(user_latent_dim)
        self.mlp_units, self.dropout_rate = int(mlp_units), float(dropout)
        self.variance_scale, self.kl_anneal_steps = float(variance_scale), int(kl_anneal_steps)
        self.loss_name, self.bpr_negatives = loss, int(bpr_negatives)
        self.use_user_latent, self.use_session_latent = bool(use_user_latent), bool(use_session_latent)
        self.gap, self.max_session_length = float(gap), int(max_session_length)
        self.max_context_sessions = int(max_context_sessions)
        self.use_query_gap = bool(use_query_gap)
        if self.use_query_gap:
            self.input_features = ("items", "deltas", "user", "next_deltas")
        self.probabilistic = loss == "ce"

        E, H = self.embedding_dim, self.hidden
        self.item_embedding = layers.Embedding(self.num_items, E, name="item_embedding")
        self.encoder = layers.GRU(H, name="encoder_gru")  # eq. 9
        self.context_rnn = layers.GRU(H, return_sequences=True, name="context_gru")  # eq. 10
        self.user_embedding = layers.Embedding(self.num_users, E, name="user_id_embedding")
        self.attribute_embeddings = [layers.Embedding(s, E, name=f"user_attribute_{j}")
                                     for j, s in enumerate(self.user_feature_sizes)]
        lat = dict(hidden_units=self.mlp_units, variance_scale=self.variance_scale)
        self.e_prior = GaussianLatent(self.user_latent_dim, hidden_layers=0, name="e_prior", **lat)  # eq. 6
        self.e_posterior = GaussianLatent(self.user_latent_dim, hidden_layers=0, name="e_posterior", **lat)  # 14
        self.z_prior = GaussianLatent(self.latent_dim, hidden_layers=1, name="z_prior", **lat)  # eq. 5, 12
        self.z_posterior = GaussianLatent(self.latent_dim, hidden_layers=1, name="z_posterior", **lat)  # 15
        self.decoder = layers.RNN(HNVMDecoderCell(H, condition_dim=H + self.latent_dim),
                                  return_sequences=True, name="decoder_gru")  # eq. 11
        self.drop = layers.Dropout(self.dropout_rate)
        self.out_proj = layers.Dense(E, name="output_projection")
        self.bos = self.add_weight(shape=(E,), initializer="zeros", name="session_start")
        self.item_bias = self.add_weight(shape=(self.num_items,), initializer="zeros", name="item_bias")
        self.user_attribute_table = self.add_weight(
            shape=(self.num_users, max(len(self.user_feature_sizes), 1)), initializer="zeros",
            dtype="int32", trainable=False, name="user_attribute_table")
        if user_attributes is not None and self.user_feature_sizes:
            self.user_attribute_table.assign(np.asarray(user_attributes, np.int32).reshape(
                self.num_users, len(self.user_feature_sizes)))

    @classmethod
    def from_dataset(cls, data, use_demographics: bool = False, **config):
        """Builds the model for a :class:`~tfrec.data.SequenceDataset` (user count and,
        with ``use_demographics``, its ``user_features`` as extra attributes)."""
        num_users = max(data.num_users, 1)
        if use_demographics and data.user_features:
            names = sorted(data.user_features)
            table = np.stack([np.asarray(data.user_features[n], np.int32) for n in names], axis=1)
            config.setdefault("user_feature_sizes", [int(table[:, j].max()) + 1 for j in range(len(names))])
            config.setdefault("user_attributes", table)
        return cls(num_items=data.num_items, num_users=num_users, **config)

    # ------------------------------------------------------------ networks
    def encode_sessions(self, sessions, training=False):
        """Encoder GRU (eq. 9) over ``[..., S]`` sessions -> ``[..., H]`` summaries.

        Each distinct session row is encoded once and the summaries are gathered
        back (the same values and, through the gather, the same summed gradients as
        encoding every row): the empty context slots (a third of a ml-100k batch)
        and sessions repeated across rows cost one encoding.
        """
        import tensorflow as tf

        shape = ops.shape(sessions)
        flat = tf.reshape(tf.cast(sessions, tf.int32), [-1, tf.shape(sessions)[-1]])
        uniq, idx = tf.raw_ops.UniqueV2(x=flat, axis=[0], out_idx=tf.int32)
        h = self.encoder(self.item_embedding(uniq), mask=ops.not_equal(uniq, 0), training=training)
        h = tf.gather(h, idx)
        return ops.reshape(h, tuple(shape[:-1]) + (self.hidden,))

    def context_states(self, context, training=False):
        """Context GRU (eq. 10) over ``[B, C, S]`` sessions -> ``[B, C, H]`` states."""
        enc = self.encode_sessions(context, training=training)
        mask = ops.any(ops.not_equal(context, 0), axis=-1)
        return self.context_rnn(enc, mask=mask, training=training)

    def attributes(self, user):
        """``a^u``: user-id embedding (one-hot times a matrix) plus demographics."""
        user = ops.clip(ops.cast(user, "int32"), 0, self.num_users - 1)
        a = self.user_embedding(user)
        if self.user_feature_sizes:
            codes = ops.take(self.user_attribute_table, user, axis=0)
            for j, emb in enumerate(self.attribute_embeddings):
                a = a + emb(codes[:, j])
        return a

    def user_latent(self, user):
        """``(q(e^u|a^u), p(e^u|a^u))`` as TFP distributions (eq. 14, 6)."""
        a = self.attributes(user)
        return diag_normal(*self.e_posterior(a)), diag_normal(*self.e_prior(a))

    def z_prior_dist(self, h_con, e):
        """``p(z_n | s_<n, e^u)`` (eq. 5, 12); without ``e^u``: ``p(z_n | s_<n)``."""
        inp = ops.concatenate([h_con, e], axis=-1) if self.use_user_latent else h_con
        return diag_normal(*self.z_prior(inp))

    def z_posterior_dist(self, h_con, session, training=False):
        """``q(z_n | s_<n, s_n)`` (eq. 15-16)."""
        h_s = self.encode_sessions(session, training=training)
        return diag_normal(*self.z_posterior(ops.concatenate([h_con, h_s], axis=-1)))

    def decode_session(self, inputs, h_con, z, training=False):
        """Decoder GRU (eq. 11): logits ``[B, S, num_items]`` where position ``t``
        scores item ``t`` of the session given items ``< t`` (position 0 reads a
        learned session-start vector)."""
        emb = self.item_embedding(inputs[:, :-1])
        B = ops.shape(inputs)[0]
        bos = ops.broadcast_to(ops.reshape(self.bos, (1, 1, -1)), (B, 1, self.embedding_dim))
        x = ops.concatenate([bos, emb], axis=1)
        cond = ops.concatenate([h_con, z], axis=-1)
        cond = ops.broadcast_to(ops.expand_dims(cond, 1), (B, ops.shape(x)[1], ops.shape(cond)[-1]))
        h = self.decoder(ops.concatenate([x, cond], axis=-1), training=training)
        h = self.out_proj(self.drop(h, training=training))
        return ops.matmul(h, ops.transpose(self.item_embedding.embeddings)) + self.item_bias

    def _latents(self, h_con, user, session=None, sample=True, training=False):
        """Latents of one session per row. With ``session`` (training), ``z_n`` comes
        from the posterior; without it, from the prior mean (scoring)."""
        B = ops.shape(h_con)[0]
        out = {}
        if self.use_user_latent:
            q_e, p_e = self.user_latent(user)
            e = q_e.sample() if sample else q_e.mean()
            out.update(q_e=q_e, p_e=p_e)
        else:
            e = ops.zeros((B, 0))
        p_z = self.z_prior_dist(h_con, e)
        out["p_z"] = p_z
        if session is not None and self.use_session_latent:
            q_z = self.z_posterior_dist(h_con, session, training=training)
            out["q_z"] = q_z
            z = q_z.sample() if sample else q_z.mean()
        else:
            z = p_z.mean()  # scoring, or the deterministic-z ablation
        out["z"] = z
        return out

    # ------------------------------------------------------------- bounds
    def session_terms(self, x, sample: bool = True, training: bool = False):
        """Per-row pieces of the conditional session-level bound for a session batch.

        Returns:
            dict with ``logits [B, S, N]``, ``kl_z [B]`` (0 without ``z_n``),
            ``kl_e [B]`` (0 without ``e^u``), and the latents.
        """
        import tensorflow_probability as tfp

        session = ops.cast(x["session"], "int32")
        h_con = self.context_states(ops.cast(x["context"], "int32"), training=training)[:, -1]
        lat = self._latents(h_con, x["user"], session=session, sample=sample, training=training)
        logits = self.decode_session(session, h_con, lat["z"], training=training)
        B = ops.shape(session)[0]
        kl = tfp.distributions.kl_divergence
        kl_z = kl(lat["q_z"], lat["p_z"]) if "q_z" in lat else ops.zeros((B,))
        kl_e = kl(lat["q_e"], lat["p_e"]) if "q_e" in lat else ops.zeros((B,))
        return {"logits": logits, "kl_z": kl_z, "kl_e": kl_e, **lat}

    def session_bound(self, x, sample: bool = False):
        """``L(s_n | a^u)`` per row (eq. 19) with the softmax log-likelihood, and the
        user term ``F(a^u) = -KL(q(e^u)||p(e^u))`` per row (not divided by ``N_u``)."""
        t = self.session_terms(x, sample=sample, training=False)
        y = ops.cast(x["session"], "int32")
        ll = self._log_likelihood(y, t["logits"])
        return {"bound": ll - t["kl_z"], "log_likelihood": ll, "kl_z": t["kl_z"], "user_term": -t["kl_e"]}

    def sequence_elbo(self, sessions, user, sample: bool = False):
        """ELBO of whole session sequences in one pass (eq. 18/20-21).

        Args:
            sessions: int ``[U, N, S]`` all sessions of each user (empty ones 0).
            user: int ``[U]``.

        Returns:
            dict with ``elbo [U]``, per-session ``log_likelihood [U, N]`` and
            ``kl_z [U, N]``, and ``kl_e [U]``.
        """
        import tensorflow_probability as tfp

        sessions = ops.cast(sessions, "int32")
        U, N, S = ops.shape(sessions)
        states = self.context_states(sessions)  # h^con_1..h^con_N
        h_prev = ops.concatenate([ops.zeros((U, 1, self.hidden)), states[:, :-1]], axis=1)  # h^con_{n-1}
        flat_s = ops.reshape(sessions, (U * N, S))
        flat_h = ops.reshape(h_prev, (U * N, self.hidden))
        flat_u = ops.reshape(ops.repeat(ops.expand_dims(ops.cast(user, "int32"), 1), N, axis=1), (U * N,))
        kl = tfp.distributions.kl_divergence
        if self.use_user_latent:
            q_e, p_e = self.user_latent(user)
            e = q_e.sample() if sample else q_e.mean()
            kl_e = kl(q_e, p_e)
            e_rep = ops.reshape(ops.repeat(ops.expand_dims(e, 1), N, axis=1), (U * N, -1))
        else:
            kl_e = ops.zeros((U,))
            e_rep = ops.zeros((U * N, 0))
        p_z = self.z_prior_dist(flat_h, e_rep)
        if self.use_session_latent:
            q_z = self.z_posterior_dist(flat_h, flat_s)
            z = q_z.sample() if sample else q_z.mean()
            kl_z = kl(q_z, p_z)
        else:
            z, kl_z = p_z.mean(), ops.zeros((U * N,))
        ll = self._log_likelihood(flat_s, self.decode_session(flat_s, flat_h, z))
        present = ops.cast(ops.any(ops.not_equal(flat_s, 0), axis=-1), "float32")
        ll = ops.reshape(ll * present, (U, N))
        kl_z = ops.reshape(kl_z * present, (U, N))
        return {"elbo": ops.sum(ll - kl_z, axis=1) - kl_e, "log_likelihood": ll, "kl_z": kl_z, "kl_e": kl_e}

    @staticmethod
    def _log_likelihood(y, logits):
        """``sum_t log softmax(logits_t)[y_t]`` over non-padding positions -> ``[B]``."""
        logp = ops.take_along_axis(ops.log_softmax(logits, axis=-1), ops.expand_dims(y, -1), axis=-1)[..., 0]
        return ops.sum(logp * ops.cast(ops.not_equal(y, 0), logp.dtype), axis=-1)

    # ------------------------------------------------------------ training
    def kl_weight(self):
        """Annealed KL weight ``min(1, step / kl_anneal_steps)`` (1 without an optimizer)."""
        opt = getattr(self, "optimizer", None)
        if self.kl_anneal_steps <= 0 or opt is None:
            return 1.0
        step = ops.cast(opt.iterations, "float32") + 1.0
        return ops.minimum(1.0, step / float(self.kl_anneal_steps))

    def call(self, inputs, training=False):
        if "session" not in inputs:
            return ops.cast(self.prefix_logits(inputs, training=training), "float32")
        t = self.session_terms(inputs, sample=training, training=training)
        y = ops.cast(inputs["session"], "int32")
        count = ops.maximum(ops.sum(ops.cast(ops.not_equal(y, 0), "float32")), 1.0)
        n_u = ops.maximum(ops.cast(inputs["num_sessions"], "float32"), 1.0)
        kl_rows = t["kl_z"] + t["kl_e"] / n_u  # eq. 19: F(a^u) spread over the user's N_u sessions
        self.add_loss(self.kl_weight() * ops.sum(kl_rows) / count)
        return t["logits"]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y = ops.cast(y, "int32")
        w = ops.cast(ops.not_equal(y, 0), "float32")
        if self.loss_name == "ce":
            nll = -ops.take_along_axis(ops.log_softmax(y_pred, axis=-1), ops.expand_dims(y, -1), axis=-1)[..., 0]
        else:  # BPR against uniformly sampled negatives
            import tensorflow as tf

            neg = tf.random.uniform(tf.concat([tf.shape(y), [self.bpr_negatives]], 0), 1, self.num_items,
                                    dtype=tf.int32)
            pos = ops.take_along_axis(y_pred, ops.expand_dims(y, -1), axis=-1)
            negs = ops.take_along_axis(y_pred, neg, axis=-1)
            nll = -ops.mean(ops.log_sigmoid(pos - negs), axis=-1)
        loss = ops.divide_no_nan(ops.sum(nll * w), ops.sum(w))
        extra = self.losses
        if extra:
            loss = loss + ops.sum(ops.stack([ops.cast(e, "float32") for e in extra]))
        return _scale_for_replicas(loss)

    def make_dataset(self, seqs: SequenceSet, shuffle: bool = True, batch_size: Optional[int] = None):
        """Session-level mini-batches (eq. 19) from :class:`~tfrec.data.hierarchy.SessionLayout`."""
        bs = batch_size or self.batch_size
        lay = SessionLayout(seqs, self.gap, self.max_session_length, self.max_context_sessions)
        make = lambda e: lay.batches(bs, shuffle, self.seed, e)  # noqa: E731
        example = next(iter(make(0)))
        return to_tf_dataset(make, example, num_batches=-(-len(lay) // bs))

    # ------------------------------------------------------------- scoring
    def _history_scores(self, inputs, new_session: bool, training=False):
        """Scores of the next item after right-padded histories: ``new_session``
        decodes the first item of a new session; otherwise the query gap
        (``next_deltas`` at the last history event, or ``query_deltas``, with
        ``use_query_gap``) decides, and without it the next item continues the last
        session."""
        items = ops.cast(inputs["items"], "int32")
        if "deltas" in inputs:
            deltas = inputs["deltas"]
        else:  # no timestamps: the whole history is one stream cut only by the length cap
            deltas = ops.where(ops.arange(ops.shape(items)[1])[None, :] == 0, np.inf, 0.0)
            deltas = ops.broadcast_to(deltas, ops.shape(items))
        user = inputs["user"] if "user" in inputs else ops.zeros((ops.shape(items)[0],), "int32")
        next_delta = None
        if not new_session and self.use_query_gap and "next_deltas" in inputs:
            last = ops.maximum(ops.sum(ops.cast(ops.not_equal(items, 0), "int32"), axis=1) - 1, 0)
            nd = ops.cast(inputs["next_deltas"], "float32")
            next_delta = ops.take_along_axis(nd, ops.expand_dims(last, 1), axis=1)[:, 0]
        elif not new_session and self.use_query_gap and "query_deltas" in inputs:
            next_delta = ops.reshape(ops.cast(inputs["query_deltas"], "float32"), (-1,))
        context, current = history_to_sessions(items, deltas, self.gap, self.max_session_length,
                                                self.max_context_sessions, new_session=new_session,
                                                next_delta=next_delta)
        h_con = self.context_states(context, training=training)[:, -1]
        lat = self._latents(h_con, user, session=None, sample=False, training=training)
        logits = self.decode_session(current, h_con, lat["z"], training=training)  # [B, S, N]
        pos = ops.sum(ops.cast(ops.not_equal(current, 0), "int32"), axis=1)
        return ops.take_along_axis(logits, ops.reshape(pos, (-1, 1, 1)), axis=1)[:, 0]

    def prefix_logits(self, inputs, training=False):
        """Next-item scores ``[B, num_items]`` after right-padded histories (the next
        item continues the last session)."""
        return self._history_scores(inputs, new_session=False, training=training)

    def score_next_session_batch(self, x):
        """Scores for the first item of a new session after each history
        (next-session task)."""
        fn = getattr(self, "_compiled_next_session", None)
        if fn is None:
            import tensorflow as tf

            fn = tf.function(lambda x: self._history_scores(x, new_session=True), reduce_retracing=True)
            self._compiled_next_session = fn
        return ops.convert_to_numpy(fn(self._as_inputs(x)))

    # -------------------------------------------------------------- saving
    def _dummy_build(self):
        S, C = self.max_session_length, self.max_context_sessions
        x = {"context": np.zeros((1, C, S), np.int32), "session": np.ones((1, S), np.int32),
             "user": np.zeros((1,), np.int32), "num_sessions": np.ones((1,), np.float32)}
        x["context"][0, -1, 0] = 1
        self.session_terms(x, sample=False)

    def build(self, input_shape=None):
        if not self.built:
            self._dummy_build()
        self.built = True

    def get_build_config(self):
        return {"built": True}

    def build_from_config(self, config):
        self.build()

    def get_config(self):
        return {**super().get_config(), "num_users": self.num_users,
                "user_feature_sizes": list(self.user_feature_sizes), "embedding_dim": self.embedding_dim,
                "hidden": self.hidden, "latent_dim": self.latent_dim, "user_latent_dim": self.user_latent_dim,
                "mlp_units": self.mlp_units, "dropout": self.dropout_rate, "variance_scale": self.variance_scale,
                "kl_anneal_steps": self.kl_anneal_steps, "loss": self.loss_name,
                "bpr_negatives": self.bpr_negatives, "use_user_latent": self.use_user_latent,
                "use_session_latent": self.use_session_latent, "gap": self.gap,
                "max_session_length": self.max_session_length,
                "max_context_sessions": self.max_context_sessions, "use_query_gap": self.use_query_gap}
