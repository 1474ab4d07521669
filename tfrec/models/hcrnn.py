"""HCRNN (Song et al., AAAI 2019): hierarchical-context RNN with variational global
context, interest-drift gates and bi-channel attention.

Two forms:

* **paper form** (``theta="prefix"``, the reference for Table 3): every training
  sample is a prefix; one θ is inferred from the whole prefix and conditions every
  step of it. Not causal, so it trains prefix-augmented (``layout="prefix"``, with
  length bucketing, one forward/backward pass per batch unless ``two_phase``).
* **causal form** (``theta="causal"``, implied by ``layout="sequence"``): θ_t is
  inferred from the prefix up to t (cumulative sum of item embeddings), the
  readout at t attends over positions ``<= t``, so a whole sequence is scored in one
  pass and trains prefix-parallel.

Options for the authors' code-level choices (see
``shared/notes/hcrnn_reference_protocol.md``): ``two_phase`` (one Adam step on the
θ inference network, then a second forward/backward pass and a step on all other
variables; the shared Adam counter advances twice per batch), ``theta_input``
(``"sum"`` of the prefix's item embeddings as in the code, or ``"mean"``), and one
θ per prefix (``theta="prefix"``).

Training loss (``loss``): the paper's full-softmax cross-entropy (default), or the
training recipe of the official GRU4Rec (Hidasi & Karatzoglou 2018) -- a ranking
loss (``"bpr-max"``, ``"top1-max"``, ...) or ``"sampled-softmax"`` over the
decoder's scores restricted to the batch's targets plus ``num_negatives``
popularity-sampled extra negatives (see :meth:`HCRNN.sampled_loss`). The KL term
is added either way; evaluation always ranks all items.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
from keras import layers, ops

from tfrec import losses as L
from tfrec.data.schema import SequenceDataset
from tfrec.layers.attention import NARMAttention
from tfrec.layers.decoders import BilinearDecoder
from tfrec.layers.hcrnn import BiChannelAttention, GlobalContextInference, HCRNNCell
from tfrec.models.base import SequentialRecommender, gather_last, lengths_of, scale_for_replicas
from tfrec.models.registry import register

ATTENTIONS = ("bi", "narm")
THETA_MODES = ("prefix", "causal")
#: ``loss`` values: full softmax (``cross_entropy``), softmax over the sampled
#: columns (``sampled_softmax``) or a ranking loss of :mod:`tfrec.losses`.
TRAINING_LOSSES = ("cross_entropy", "sampled_softmax", "bpr_max", "top1_max", "bpr", "top1")


def _loss_name(loss: Optional[str]) -> str:
    n = (loss or "cross_entropy").replace("-", "_")
    n = {"xe": "cross_entropy", "ce": "cross_entropy"}.get(n, n)
    if n not in TRAINING_LOSSES:
        raise ValueError(f"loss must be one of {TRAINING_LOSSES} ('-' or '_'), got {loss!r}")
    return n


def _steps(seq_tm):
    """A ``tf.TensorArray`` of the time-major ``seq_tm [T, ...]``, one element per step."""
    import tensorflow as tf

    return tf.TensorArray(seq_tm.dtype, size=tf.shape(seq_tm)[0], element_shape=seq_tm.shape[1:]).unstack(seq_tm)


@register(
    "hcrnn",
    model_config={"variant": 3, "attention": "bi"},
    fit_config={"epochs": 200, "patience": 10},
    test_config={"embedding_dim": 8, "hidden": 8, "num_contexts": 4, "inference_units": 8,
                 "batch_size": 64},
    description="HCRNN-1/2/3 with variational global context and bi-channel/NARM attention (AAAI'19)",
)
@keras.saving.register_keras_serializable(package="tfrec")
class HCRNN(SequentialRecommender):
    """HCRNN-1/2/3 recommender (eq. 11-33 of the paper).

    Args:
        num_items: output classes including padding 0.
        variant: 1, 2 or 3 (see :class:`~tfrec.layers.HCRNNCell`).
        attention: ``"bi"`` (bi-channel attention, eq. 25-27) or ``"narm"``.
        embedding_dim: item-embedding size ``D`` (also the local-context size).
        hidden: temporary-context size ``H``.
        num_contexts: number ``K`` of global contexts (50).
        inference_units: hidden width of the θ inference network.
        kl_weight: λ of ``CE + λ KL`` (0.001 in the authors' code).
        input_dropout: dropout on the item embeddings fed to the cell (0.25).
        theta_dropout: dropout on the inference network input (0.25).
        output_dropout: dropout on the decoder input (0.5).
        theta: ``"prefix"`` (paper form) or ``"causal"`` (θ_t from the prefix up to t).
        theta_input: ``"sum"`` (authors) or ``"mean"`` of the item embeddings.
        two_phase: the authors' two-phase update per batch (doubles the work).
        loop: ``"fast"`` (one ``tf.while_loop`` with hoisted projections and keys) or
            ``"keras"`` (``keras.layers.RNN(HCRNNCell)`` with masking); same values.
        loss: training loss. ``"cross-entropy"`` (default, the paper's full softmax);
            otherwise the GRU4Rec recipe on sampled columns (:meth:`sampled_loss`):
            ``"bpr-max"``, ``"top1-max"``, ``"bpr"``, ``"top1"`` (:mod:`tfrec.losses`)
            or ``"sampled-softmax"`` (cross-entropy of the target against the
            sampled columns only, no log-Q correction, as GRU4Rec's sampled
            cross-entropy). ``-`` or ``_`` accepted.
        num_negatives: extra negatives per training batch, drawn with probability
            proportional to ``count^sample_alpha`` (training item counts, set by
            ``fit``) and shared by every target of the batch (sampled losses only).
        sample_alpha: popularity exponent of that sampler (0: uniform over seen items).
        bpreg: BPR-max score regulariser weight (``loss="bpr-max"``).
        elu_param: ELU(alpha) applied to the sampled scores before a ranking loss
            (GRU4Rec's final activation; monotone, so ranking at evaluation is
            unchanged); 0 = none. Not applied for ``"sampled-softmax"``.
        remove_accidental_hits: a column holding the same item as a row's target is
            not a negative of that row (other targets in the batch, samples).
        length_groups: paper form only: run the recurrence of a batch in this many
            groups of rows sorted by history length, each padded only to its own
            longest history (the readout, θ and the decoder still see the whole
            batch). The scores, loss and gradients are those of the whole batch
            (tested); only the work changes. With ``bucket=False`` this trains on
            the authors' random batches of prefixes (reshuffled every epoch) at
            close to the cost of length-bucketed batches, whose rows all have
            about the same length. 1: one group.
        layout, batch_size, bucket, seed: see :class:`SequentialRecommender`;
            ``layout="sequence"`` needs (and implies) ``theta="causal"``.

    Example:

    >>> m = HCRNN(num_items=50, embedding_dim=8, hidden=8, num_contexts=4)
    >>> m.score_prefix_batch({"items": np.array([[3, 4, 0], [5, 6, 7]])}).shape
    (2, 50)
    """

    def __init__(self, num_items: int, variant: int = 3, attention: str = "bi",
                 embedding_dim: int = 100, hidden: int = 100, num_contexts: int = 50,
                 inference_units: int = 100, kl_weight: float = 1e-3, input_dropout: float = 0.25,
                 theta_dropout: float = 0.25, output_dropout: float = 0.5,
                 theta: Optional[str] = None, theta_input: str = "sum", two_phase: bool = False,
                 loop: str = "fast", loss: str = "cross_entropy", num_negatives: int = 0,
                 sample_alpha: float = 0.5, bpreg: float = 1.0, elu_param: float = 0.0,
                 remove_accidental_hits: bool = True, length_groups: int = 1,
                 layout: str = "prefix", batch_size: int = 512, bucket: bool = True, seed: int = 0,
                 **kwargs):
        if theta is None:
            theta = "causal" if layout == "sequence" else "prefix"
        if theta not in THETA_MODES:
            raise ValueError(f"theta must be one of {THETA_MODES}, got {theta!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if theta_input not in ("sum", "mean"):
            raise ValueError(f"theta_input must be 'sum' or 'mean', got {theta_input!r}")
        # read by the base class (and the evaluator) through the ``causal`` property
        self.__dict__["_theta_mode"] = theta
        super().__init__(num_items=num_items, layout=layout, batch_size=batch_size, bucket=bucket,
                         seed=seed, **kwargs)
        self.variant = int(variant)
        self.attention = attention
        self.embedding_dim = int(embedding_dim)
        self.hidden = int(hidden)
        self.num_contexts = int(num_contexts)
        self.inference_units = int(inference_units)
        self.kl_weight = float(kl_weight)
        self.input_dropout_rate = float(input_dropout)
        self.theta_dropout_rate = float(theta_dropout)
        self.output_dropout = float(output_dropout)
        self.theta = theta
        self.theta_input = theta_input
        self.two_phase = bool(two_phase)
        if loop not in ("fast", "keras"):
            raise ValueError(f"loop must be 'fast' or 'keras', got {loop!r}")
        self.loop = loop
        self.loss_name = _loss_name(loss)
        self.num_negatives = int(num_negatives)
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
        self.sample_alpha = float(sample_alpha)
        self.bpreg = float(bpreg)
        self.elu_param = float(elu_param)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        if isinstance(length_groups, bool) or not isinstance(length_groups, (int, np.integer)) \
                or length_groups < 1:
            raise ValueError(f"length_groups must be an integer >= 1, got {length_groups!r}")
        if length_groups > 1 and (theta == "causal" or loop != "fast"):
            raise ValueError("length_groups > 1 needs the paper form (theta='prefix') and loop='fast'")
        self.length_groups = int(length_groups)
        self.sample_logits = None
        if self.sampled_training:
            self.seed_gen = keras.random.SeedGenerator(seed + 3)

        self.embedding = layers.Embedding(
            self.num_items, self.embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.1), name="item_embedding")
        self.input_dropout = layers.Dropout(self.input_dropout_rate, seed=seed)
        self.theta_dropout = layers.Dropout(self.theta_dropout_rate, seed=seed + 1)
        self.global_context = GlobalContextInference(self.num_contexts, self.inference_units,
                                                     self.kl_weight, seed=seed + 2, name="global_context")
        self.cell = HCRNNCell(self.hidden, num_contexts=self.num_contexts, variant=self.variant,
                              name="hcrnn_cell")
        self.rnn = layers.RNN(self.cell, return_sequences=True, name="hcrnn_rnn")
        if attention == "bi":
            self.readout = BiChannelAttention(name="bi_attention")
        elif self.causal:
            self.readout = BiChannelAttention(channels=("h",), name="narm_attention")
        else:
            self.readout = NARMAttention(name="narm_attention")
        self.decoder = BilinearDecoder(self.embedding, dropout=self.output_dropout, name="decoder")
        # every size is known here; building now gives the optimizer all variables
        # before the first (possibly two-phase) train step
        self.build()

    @property
    def causal(self):  # noqa: D401 - overrides the class attribute of the base
        return self.__dict__.get("_theta_mode") == "causal"

    @property
    def readout_size(self):
        return (3 if self.attention == "bi" else 2) * self.hidden

    def build(self, input_shape=None):
        if self.built:
            return
        D, K, H = self.embedding_dim, self.num_contexts, self.hidden
        self.embedding.build((None, None))
        self.global_context.build((None, D))
        self.cell.build((None, D + K))
        self.rnn.build((None, None, D + K + self.cell.projection_size))
        if isinstance(self.readout, NARMAttention):
            self.readout.build((None, None, H), (None, H))
        else:
            self.readout.build((None, None, H), (None, None, D))
        self.decoder.build((None, self.readout_size))
        if self.sampled_training:
            # log-probabilities of the negative sampler (set from the training counts
            # by ``fit``; until then uniform over the items, never padding)
            init = np.zeros(self.num_items, "float32")
            init[0] = -1e9
            self.sample_logits = self.add_weight(
                shape=(self.num_items,), initializer=keras.initializers.Constant(init),
                trainable=False, name="sample_logits")
        self.built = True

    # ------------------------------------------------------------ networks
    def _summary(self, e, mask):
        """Input of the θ network: sum (or mean) of item embeddings, per prefix
        ``[B, D]`` or per position (causal) ``[B, T, D]``."""
        m = ops.cast(mask, e.dtype)
        if self.causal:
            u = ops.cumsum(e, axis=1)
            n = ops.cumsum(m, axis=1)
        else:
            u = ops.sum(e, axis=1)
            n = ops.sum(m, axis=1)
        if self.theta_input == "mean":
            u = u / ops.maximum(ops.expand_dims(n, -1), 1.0)
        return u

    def _cell_inputs(self, items, training=False):
        """Dropped-out item embeddings ``x [B,T,D]``, θ and the padding mask."""
        mask = ops.not_equal(items, 0)
        e = self.embedding(items) * ops.expand_dims(ops.cast(mask, self.compute_dtype), -1)
        x = self.input_dropout(e, training=training)
        u = self.theta_dropout(self._summary(e, mask), training=training)
        theta = self.global_context(u, mask=mask if self.causal else None, training=training)
        return x, theta, mask

    def _encode(self, items, training=False):
        """Runs the cell; returns ``h [B,T,H]``, ``c [B,T,D]``, θ, mask."""
        x, theta, mask = self._cell_inputs(items, training=training)
        if self.loop == "keras":
            theta_seq = theta if self.causal else ops.expand_dims(theta, 1) * ops.ones_like(x[..., :1])
            inputs = self.cell.project_inputs(ops.concatenate([x, theta_seq], axis=-1))
            parts = self.cell.split_outputs(self.rnn(inputs, mask=mask, training=training))
            return parts["h"], parts["c"], theta, mask
        h_seq, c_seq = self._fast_loop(x, theta)
        return h_seq, c_seq, theta, mask

    def _grouped_readout(self, items, training=False):
        """Paper-form readout ``[B, S]`` with the recurrence run in ``length_groups``
        groups of rows sorted by length, each truncated to its longest history.
        Rows do not interact in the recurrence or the readout, and positions past a
        row's length are never read, so this equals the one-group readout. A batch
        with fewer rows than groups runs as one group."""
        import tensorflow as tf

        x, theta, mask = self._cell_inputs(items, training=training)
        lengths = lengths_of(items)
        B = tf.shape(items)[0]
        k = self.length_groups

        def readout(rows):
            lens = tf.gather(lengths, rows)
            T = tf.maximum(tf.reduce_max(lens), 1)
            h_seq, c_seq = self._fast_loop(tf.gather(x, rows)[:, :T], tf.gather(theta, rows))
            return self._readout_last(h_seq, c_seq, tf.gather(mask, rows)[:, :T], lens)

        def grouped():
            order = tf.argsort(lengths, stable=True)
            parts = [readout(order[(B * j) // k : (B * (j + 1)) // k]) for j in range(k)]
            return tf.gather(tf.concat(parts, axis=0), tf.math.invert_permutation(order))

        return tf.cond(B >= k, grouped, lambda: readout(tf.range(B)))

    def _fast_loop(self, x, theta):
        """The recurrence as one ``tf.while_loop``: the input projections of all steps
        are one matmul before the loop, the attention keys ``θ_k M_k W_θα`` are
        computed once per prefix (per step only in the causal form), and padding
        steps are not masked inside the loop: histories are right-padded, so the
        outputs at padded positions are never read (attention masks them and the
        last real state is gathered). Same values as ``keras.layers.RNN(cell)`` at
        real positions (tested)."""
        import tensorflow as tf

        cell = self.cell
        xp = ops.matmul(x, cell.input_kernel) + cell.bias
        keys = cell.attention_keys(theta)  # [B, K, A] or causal [B, T, K, A]
        # per-step inputs are read from TensorArrays: indexing a captured tensor in
        # the loop (x_tm[t]) would make the backward pass add a gradient of the whole
        # [T, B, ...] tensor at every step (O(T^2 B) memory traffic)
        x_tm = _steps(tf.transpose(x, (1, 0, 2)))
        xp_tm = _steps(tf.transpose(xp, (1, 0, 2)))
        keys_tm = _steps(tf.transpose(keys, (1, 0, 2, 3))) if self.causal else None
        T = tf.shape(x)[1]
        B = tf.shape(x)[0]
        c0 = tf.zeros(tf.stack([B, self.embedding_dim]), x.dtype)
        h0 = tf.zeros(tf.stack([B, self.hidden]), x.dtype)
        hs = tf.TensorArray(x.dtype, size=T, element_shape=tf.TensorShape([None, self.hidden]))
        cs = tf.TensorArray(x.dtype, size=T, element_shape=tf.TensorShape([None, self.embedding_dim]))

        def body(t, c, h, hs, cs):
            k = keys_tm.read(t) if keys_tm is not None else keys
            c, h, _ = cell.step_with_keys(x_tm.read(t), xp_tm.read(t), k, c, h)
            return t + 1, c, h, hs.write(t, h), cs.write(t, c)

        _, _, _, hs, cs = tf.while_loop(lambda t, *_: t < T, body, (tf.constant(0), c0, h0, hs, cs))
        return tf.transpose(hs.stack(), (1, 0, 2)), tf.transpose(cs.stack(), (1, 0, 2))

    def _readout_last(self, h_seq, c_seq, mask, lengths, return_weights=False):
        h_last, c_last = gather_last(h_seq, lengths), gather_last(c_seq, lengths)
        if isinstance(self.readout, NARMAttention):
            out = self.readout(h_seq, h_last, mask=mask, return_weights=return_weights)
            if return_weights:
                return out[0], {"alpha_h": out[1]}
            return out
        return self.readout(h_seq, c_seq, h_last, c_last, mask=mask, return_weights=return_weights)

    def prefix_logits(self, inputs, training=False):
        items = inputs["items"]
        if self.causal:
            return super().prefix_logits(inputs, training=training)
        if self.length_groups > 1:
            s = self._grouped_readout(items, training=training)
        else:
            h_seq, c_seq, _, mask = self._encode(items, training=training)
            s = self._readout_last(h_seq, c_seq, mask, lengths_of(items))
        return self.decode(s, training=training)

    def encode_sequence(self, inputs, training=False):
        """Causal form: readout vector at every position ``[B, T, S]``."""
        if not self.causal:
            raise NotImplementedError("encode_sequence needs theta='causal'")
        h_seq, c_seq, _, mask = self._encode(inputs["items"], training=training)
        pos = ops.arange(ops.shape(h_seq)[1])
        causal_mask = ops.logical_and(ops.expand_dims(mask, 1),
                                      ops.expand_dims(pos[None, :] <= pos[:, None], 0))
        return self.readout(h_seq, c_seq, h_seq, c_seq, mask=causal_mask)

    def decode(self, h, training=False):
        return self.decoder(h, training=training)

    # ------------------------------------------------------------ training
    @property
    def sampled_training(self) -> bool:
        """True when the training loss is computed on sampled columns (``loss`` is
        not ``"cross_entropy"``)."""
        return self.loss_name != "cross_entropy"

    def set_sampler(self, counts):
        """Sets the negative sampler to ``count^sample_alpha`` of the training counts."""
        self.sample_logits.assign(np.maximum(L.popularity_sampler_logits(counts, self.sample_alpha), -1e9))

    def draw_negatives(self):
        """The batch's extra negative columns ``[1 + num_negatives]`` int32: the
        padding class 0 (a ranked candidate under the hcrnn protocol, never a target,
        so only this keeps its score low) followed by ``num_negatives``
        popularity-sampled items."""
        pad = ops.zeros((1,), "int32")
        if not self.num_negatives:
            return pad
        drawn = keras.random.categorical(ops.expand_dims(self.sample_logits, 0), self.num_negatives,
                                         seed=self.seed_gen)[0]
        return ops.concatenate([pad, ops.cast(drawn, "int32")], axis=0)

    def sampled_loss(self, y, y_pred, sample_weight=None, negatives=None):
        """The sampled training loss (``loss != "cross_entropy"``), KL excluded.

        The decoder's scores of every target position (``y != 0``; ``y`` ``[B]`` or
        ``[B, T]``, ``y_pred`` ``[..., num_items]``) are restricted to the columns
        ``[targets of the batch (n), negatives (S)]``: row ``i``'s positive is column
        ``i``, its negatives are the other rows' targets and the ``S`` shared extra
        negatives (without the row's own item when ``remove_accidental_hits``). The
        per-row loss is :func:`tfrec.losses.per_example_loss` (``"sampled_softmax"``:
        its ``cross_entropy`` over these columns); the rows' sum is divided by
        ``target_normalizer`` (sequence layout) or else by the number of targets.

        Args:
            y: int targets, 0 = no target.
            y_pred: the model's scores.
            sample_weight: optional weights of the same shape as ``y``.
            negatives: int ``[S]`` extra negative columns (default :meth:`draw_negatives`).

        Returns:
            scalar loss.
        """
        import tensorflow as tf

        n_cls = tf.shape(y_pred)[-1]
        y_flat = tf.reshape(tf.cast(y, tf.int32), [-1])
        keep = tf.not_equal(y_flat, 0)
        rows = tf.boolean_mask(tf.reshape(tf.cast(y_pred, tf.float32), tf.stack([-1, n_cls])), keep)
        targets = tf.boolean_mask(y_flat, keep)
        if negatives is None:
            negatives = self.draw_negatives()
        negatives = tf.cast(tf.convert_to_tensor(negatives), tf.int32)
        num_extra = negatives.shape[0]
        cols = tf.concat([targets, negatives], axis=0)
        scores = tf.gather(rows, cols, axis=1)
        name = "cross_entropy" if self.loss_name == "sampled_softmax" else self.loss_name
        if self.elu_param > 0 and name != "cross_entropy":
            scores = ops.elu(scores, alpha=self.elu_param)
        n = tf.shape(targets)[0]
        mask = L.negative_mask(n, num_extra)
        if self.remove_accidental_hits:
            mask = tf.logical_and(mask, tf.not_equal(cols[None, :], targets[:, None]))
        per = L.per_example_loss(name, scores, mask, self.bpreg)
        if sample_weight is not None:
            per = per * tf.boolean_mask(tf.reshape(tf.cast(sample_weight, tf.float32), [-1]), keep)
        total = tf.reduce_sum(per)
        if self.target_normalizer and len(y.shape) >= 2:
            return total / self.target_normalizer
        return tf.math.divide_no_nan(total, tf.cast(n, tf.float32))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Full-softmax cross-entropy + KL (base class), or :meth:`sampled_loss` + KL."""
        if not self.sampled_training or y is None:
            return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                        training=training)
        loss = self.sampled_loss(y, y_pred, sample_weight)
        extra = self.losses
        if extra:
            loss = loss + ops.sum(ops.stack([ops.cast(e, "float32") for e in extra]))
        return scale_for_replicas(loss)

    def fit(self, x=None, y=None, **kwargs):
        if isinstance(x, SequenceDataset) and self.sampled_training:
            self.set_sampler(x.train.item_counts(self.num_items))
        return super().fit(x, y, **kwargs)

    def train_step(self, data):
        """Default Keras step, or the authors' two-phase update when ``two_phase``."""
        if not self.two_phase:
            return super().train_step(data)
        import tensorflow as tf

        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        inference = list(self.global_context.trainable_variables)
        ids = {id(v) for v in inference}
        others = [v for v in self.trainable_variables if id(v) not in ids]
        if not self.optimizer.built:  # one Adam over all variables (built on the first trace)
            self.optimizer.build(self.trainable_variables)
        for variables in (inference, others):
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=True)
            grads = tape.gradient(loss, variables)
            self.optimizer.apply(grads, variables)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x["items"])[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sw)

    # ------------------------------------------------------------ explain
    def explain(self, history: Sequence[int], top_items: int = 10, top_contexts: int = 3) -> dict:
        """Explanations for one history (Table 4, Fig. 5-7 of the paper) as numpy data.

        Returns a dict with ``items``; ``theta`` ``[K]`` (the prefix's global-context
        proportion; causal form: θ at the last step, ``theta_steps`` ``[T, K]``);
        ``top_contexts`` (indices of the largest θ_k) and ``context_items`` (for each
        of them the ``top_items`` items whose embedding is closest to ``M_k`` by dot
        product); per step ``global_attention`` β ``[T, K]``, ``local_gate``,
        ``reset_gate``, ``drift_gate`` (``[T, H]`` each, with ``*_mean`` ``[T]``),
        ``delta_c``, ``delta_h`` (norms of the changes of the contexts);
        ``alpha_c`` / ``alpha_h`` ``[T]`` (readout attention at the last step;
        ``alpha_c`` only for ``attention="bi"``) and ``recommended`` (top-10 items).
        """
        import tensorflow as tf

        self.build()
        items = np.asarray(history, dtype=np.int32).reshape(1, -1)
        items = items[:, items[0] != 0]
        T = items.shape[1]
        if T == 0:
            raise ValueError("history is empty")
        mask = ops.not_equal(items, 0)
        e = self.embedding(items)
        theta, _ = self.global_context(self._summary(e, mask), training=False, return_details=True)
        theta_seq = theta if self.causal else ops.expand_dims(theta, 1) * ops.ones_like(e[..., :1])
        inputs = self.cell.project_inputs(ops.concatenate([e, theta_seq], axis=-1))
        c = ops.zeros((1, self.embedding_dim))
        h = ops.zeros((1, self.hidden))
        steps = {k: [] for k in ("global_attention", "local_gate", "reset_gate", "drift_gate",
                                 "delta_c", "delta_h")}
        hs, cs = [], []
        for t in range(T):
            c_new, h_new, diag = self.cell.step(inputs[:, t], c, h)
            for k in ("global_attention", "local_gate", "reset_gate", "drift_gate"):
                steps[k].append(ops.convert_to_numpy(diag[k])[0])
            steps["delta_c"].append(float(ops.norm(c_new - c)))
            steps["delta_h"].append(float(ops.norm(h_new - h)))
            c, h = c_new, h_new
            hs.append(h)
            cs.append(c)
        h_seq, c_seq = ops.stack(hs, axis=1), ops.stack(cs, axis=1)
        s, weights = self._readout_last(h_seq, c_seq, tf.ones((1, T), tf.bool),
                                        tf.constant([T]), return_weights=True)
        logits = ops.convert_to_numpy(self.decode(s, training=False))[0]
        th = ops.convert_to_numpy(theta)[0]
        out = {"items": items[0].tolist()}
        if self.causal:
            out["theta_steps"] = th
            th = th[-1]
        out["theta"] = th
        order = np.argsort(-th)[:top_contexts]
        memory = ops.convert_to_numpy(self.cell.global_context_memory)
        table = ops.convert_to_numpy(self.embedding.embeddings)
        sim = memory[order] @ table.T
        sim[:, 0] = -np.inf
        out["top_contexts"] = order.tolist()
        out["context_items"] = {int(k): np.argsort(-row)[:top_items].tolist() for k, row in zip(order, sim)}
        for k, v in steps.items():
            out[k] = np.asarray(v)
        for k in ("local_gate", "reset_gate", "drift_gate"):
            out[k + "_mean"] = out[k].mean(axis=-1)
        for k, w in weights.items():
            out[k] = ops.convert_to_numpy(w)[0]
        out["recommended"] = np.argsort(-logits)[:10].tolist()
        return out

    def get_config(self):
        return {**super().get_config(), "variant": self.variant, "attention": self.attention,
                "embedding_dim": self.embedding_dim, "hidden": self.hidden,
                "num_contexts": self.num_contexts, "inference_units": self.inference_units,
                "kl_weight": self.kl_weight, "input_dropout": self.input_dropout_rate,
                "theta_dropout": self.theta_dropout_rate, "output_dropout": self.output_dropout,
                "theta": self.theta, "theta_input": self.theta_input, "two_phase": self.two_phase,
                "loop": self.loop, "loss": self.loss_name, "num_negatives": self.num_negatives,
                "sample_alpha": self.sample_alpha, "bpreg": self.bpreg, "elu_param": self.elu_param,
                "remove_accidental_hits": self.remove_accidental_hits,
                "length_groups": self.length_groups}


def plot_explanation(expl: dict, labels: Optional[Sequence[str]] = None, figsize=(10, 8)):
    """Draws :meth:`HCRNN.explain` output with matplotlib: θ (Table 4 contexts), the
    drift/reset/local gates per step (Fig. 5, 7), the readout attention α^(c), α^(h)
    (Fig. 6) and the change of the contexts per step. Returns the figure."""
    import matplotlib

    matplotlib.use(matplotlib.get_backend() or "Agg")
    import matplotlib.pyplot as plt

    T = len(expl["items"])
    steps = np.arange(1, T + 1)
    labels = list(labels) if labels is not None else [str(i) for i in expl["items"]]
    fig, axes = plt.subplots(4, 1, figsize=figsize)
    ax = axes[0]
    ax.bar(np.arange(len(expl["theta"])), expl["theta"])
    ax.set_title("global-context proportion θ (top: " +
                 ", ".join(f"k={k}" for k in expl["top_contexts"]) + ")")
    ax = axes[1]
    for k in ("drift_gate_mean", "reset_gate_mean", "local_gate_mean"):
        ax.plot(steps, expl[k], marker="o", label=k.replace("_mean", ""))
    ax.set_ylim(0, 1)
    ax.set_title("gates per step (mean over units)")
    ax.legend(fontsize="small")
    ax = axes[2]
    width = 0.4
    if "alpha_c" in expl:
        ax.bar(steps - width / 2, expl["alpha_c"], width, label="α^(c)")
    ax.bar(steps + width / 2, expl["alpha_h"], width, label="α^(h)")
    ax.set_title("readout attention at the last step")
    ax.legend(fontsize="small")
    ax = axes[3]
    ax.plot(steps, expl["delta_c"], marker="o", label="|Δc|")
    ax.plot(steps, expl["delta_h"], marker="o", label="|Δh|")
    ax.set_title("change of local (c) and temporary (h) context")
    ax.legend(fontsize="small")
    for a in axes[1:]:
        a.set_xticks(steps)
        a.set_xticklabels(labels, rotation=90, fontsize="x-small")
    fig.tight_layout()
    return fig
