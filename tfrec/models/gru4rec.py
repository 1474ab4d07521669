"""GRU4Rec in two forms, and LSTM4Rec.

* :class:`GRU4Rec` (registry ``gru4rec``) -- faithful to Hidasi et al. (2016) and
  Hidasi & Karatzoglou (2018): session-parallel mini-batches with the hidden state
  of a lane zeroed *before* the step in which a new sequence starts, ranking losses
  (TOP1, BPR, TOP1-max, BPR-max, cross-entropy) over mini-batch negatives plus
  optional popularity-sampled extra negatives, tied ("constrained") input/output
  item embeddings, final ELU, Adagrad with momentum (:class:`AdagradM`).
  Training runs through Keras ``fit``: each dataset element is one session-parallel
  step (or a compiled chunk of steps), the lanes' hidden states are replica-local
  lane state (:mod:`tfrec.layers.state`), so it also trains under ``tf.distribute``.
  Evaluation starts every sequence from a zero state (``score_sequence_batch``).
* :class:`GRU4RecCE` (``gru4rec_ce``) and :class:`LSTM4Rec` (``lstm4rec``) --
  the prefix / cross-entropy form used in the HCRNN paper's table: an RNN over
  each history, full softmax layer with bias, no weight tying.

RNN settings: the table models use TF1 ``GRUCell`` semantics (Keras
``reset_after=False``, gate biases initialised to 1.0) and an ``LSTM`` with
``unit_forget_bias``; the faithful model uses PyTorch/cuDNN GRU semantics
(``reset_after=True``, zero biases). Both keep ``activation="tanh"``,
``recurrent_activation="sigmoid"``, no recurrent dropout and ``unroll=False`` --
the settings Keras requires for its cuDNN kernels; ``reset_after=False`` is not
cuDNN-eligible (it runs on the generic loop on GPU as on CPU).
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import numpy as np
from keras import layers, ops

from tfrec import losses as L
from tfrec.data.pipelines import generator_options, session_parallel_batches
from tfrec.data.schema import SequenceDataset, SequenceSet
from tfrec.layers.embeddings import table_item_embedding
from tfrec.layers.state import lane_state, lane_states
from tfrec.models.base import SequentialRecommender
from tfrec.models.registry import register

TABLE = {"embedding_dim": 100, "units": 100, "input_dropout": 0.25, "decoder_dropout": 0.5,
         "batch_size": 512}
TINY = {"embedding_dim": 8, "units": 8, "batch_size": 32}


# --------------------------------------------------------------------- helpers
@keras.saving.register_keras_serializable(package="tfrec")
class GateBiasInitializer(keras.initializers.Initializer):
    """TF1 ``GRUCell`` bias init: 1.0 on the update/reset gates, 0 on the candidate.

    Keras orders a GRU's ``3 * units`` bias as ``[z, r, h]``.
    """

    def __init__(self, gate_bias: float = 1.0):
        self.gate_bias = float(gate_bias)

    def __call__(self, shape, dtype=None):
        units = shape[-1] // 3
        b = np.concatenate([np.full(2 * units, self.gate_bias), np.zeros(units)]).astype("float32")
        return ops.convert_to_tensor(np.broadcast_to(b, shape).copy(), dtype=dtype or "float32")

    def get_config(self):
        return {"gate_bias": self.gate_bias}


@keras.saving.register_keras_serializable(package="tfrec")
class AdagradM(keras.optimizers.Optimizer):
    """Adagrad with momentum as in the official GRU4Rec code::

        acc += g^2;  mom = momentum * mom - lr * g / sqrt(acc + eps);  w += mom

    Rows of embedding tables whose gradient is sparse (``IndexedSlices``, from
    ``take``/``gather``) are updated *only where touched* in the step -- the
    untouched rows keep their accumulator, momentum and value, as the official
    indexed optimizer does.

    Args:
        learning_rate: step size (0.05 in GRU4Rec's bpr-max recipe).
        momentum: momentum (0.4 in the recipe; 0 gives plain Adagrad).
        epsilon: added under the square root (1e-6).
    """

    def __init__(self, learning_rate=0.05, momentum=0.0, epsilon=1e-6, name="adagradm", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._acc = [self.add_variable_from_reference(v, "accumulator") for v in var_list]
        self._mom = [self.add_variable_from_reference(v, "momentum") for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        i = self._get_variable_index(variable)
        acc, mom = self._acc[i], self._mom[i]
        lr = ops.cast(learning_rate, variable.dtype)
        touched = self.__dict__.get("_row_masks", {}).get(i)
        if touched is not None:  # dense gradient + the rows the step touched
            touched = tf.reshape(tf.cast(touched, tf.bool), [-1] + [1] * (len(variable.shape) - 1))
        elif isinstance(gradient, tf.IndexedSlices):
            n = tf.shape(variable)[0]
            hit = tf.math.unsorted_segment_max(tf.ones_like(gradient.indices, tf.float32),
                                               gradient.indices, n)
            touched = tf.reshape(hit > 0, [-1] + [1] * (len(variable.shape) - 1))
            gradient = tf.math.unsorted_segment_sum(gradient.values, gradient.indices, n)  # coalesce
        g = ops.cast(gradient, variable.dtype)
        acc.assign(acc + g * g)
        step = lr * g / ops.sqrt(acc + self.epsilon)
        if self.momentum > 0:
            new_mom = self.momentum * mom - step
            if touched is not None:
                new_mom = ops.where(touched, new_mom, mom)
            mom.assign(new_mom)
            delta = new_mom
        else:
            delta = -step
        if touched is not None:
            delta = ops.where(touched, delta, ops.zeros_like(delta))
        variable.assign(variable + delta)

    def apply_gradients_with_rows(self, grads_and_vars, touched_rows):
        """``apply_gradients`` where some embedding tables come with a *dense*
        gradient plus the rows the step touched (``[(variable, bool [rows]), ...]``):
        updated exactly as the equivalent sparse (``IndexedSlices``) gradient would
        be -- untouched rows keep accumulator, momentum and value -- without
        scattering rows. One device only (the masks are tensors of the caller's graph)."""
        grads_and_vars = list(grads_and_vars)
        if not self.built:
            self.build([v for _, v in grads_and_vars])
        self.__dict__["_row_masks"] = {self._get_variable_index(v): m for v, m in touched_rows}
        try:
            return self.apply_gradients(grads_and_vars)
        finally:
            self.__dict__["_row_masks"] = {}

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


# ------------------------------------------------------- prefix / CE form (table)
class RNN4Rec(SequentialRecommender):
    """An RNN over the history with a full softmax output layer (HCRNN's GRU4REC row).

    ``embedding (N(0, 0.1)) -> dropout -> GRU/LSTM -> dropout -> Dense(num_items)``,
    cross-entropy. Causal: the state at step ``t`` sees items ``1..t`` only, so
    evaluation scores whole sequences in one pass and ``layout="sequence"`` trains
    prefix-parallel with the same objective (about 5x less CPU per epoch on
    CiteULike). With length-bucketed sequence batches, set ``target_normalizer``
    (e.g. 512) so that every target keeps the same weight as in prefix batches.

    Args:
        num_items: number of classes including padding 0.
        cell: ``"gru"`` (TF1 GRUCell semantics: ``reset_after=False``, gate bias
            1.0) or ``"lstm"`` (``unit_forget_bias``).
        embedding_dim, units: sizes (100 / 100 in the table).
        input_dropout: dropout on the item embeddings (0.25).
        decoder_dropout: dropout on the state fed to the output layer (0.5).
        target_normalizer: with ``layout="sequence"``, divide the summed loss by
            this constant (see :class:`~tfrec.models.base.SequentialRecommender`); ``None``: batch mean.
        **kwargs: ``layout``, ``batch_size``, ``bucket``, ``seed`` (see base).

    Example:

    >>> m = GRU4RecCE(num_items=10, embedding_dim=4, units=4)
    >>> m.score_prefix_batch({"items": np.array([[1, 2, 0]])}).shape
    (1, 10)
    """

    causal = True
    probabilistic = True
    default_cell = "gru"

    def __init__(self, num_items, cell: Optional[str] = None, embedding_dim: int = 100,
                 units: int = 100, input_dropout: float = 0.25, decoder_dropout: float = 0.5,
                 target_normalizer: Optional[float] = None, **kwargs):
        super().__init__(num_items, target_normalizer=target_normalizer, **kwargs)
        self.cell = (cell or self.default_cell).lower()
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        self.embedding_dim, self.units = int(embedding_dim), int(units)
        self.input_dropout, self.decoder_dropout = float(input_dropout), float(decoder_dropout)
        self.item_embedding = table_item_embedding(self.num_items, self.embedding_dim, self.seed)
        self.in_drop = layers.Dropout(self.input_dropout)
        if self.cell == "gru":
            self.rnn = layers.GRU(self.units, return_sequences=True, reset_after=False,
                                  recurrent_initializer="glorot_uniform",
                                  bias_initializer=GateBiasInitializer(1.0), name="gru")
        else:
            self.rnn = layers.LSTM(self.units, return_sequences=True, unit_forget_bias=True,
                                   recurrent_initializer="glorot_uniform", name="lstm")
        self.out_drop = layers.Dropout(self.decoder_dropout)
        self.output_layer = layers.Dense(self.num_items, name="softmax")

    def encode_sequence(self, inputs, training=False):
        # Right padding + causality: padded steps come after every real step, so
        # no mask is needed for the states at real positions.
        x = self.in_drop(self.item_embedding(inputs["items"]), training=training)
        return self.rnn(x, training=training)

    def decode(self, h, training=False):
        return self.output_layer(self.out_drop(h, training=training))

    # ------------------------------------------------- O(1) serving step
    def initial_state(self, batch_size):
        """Zero recurrent state for ``batch_size`` sessions: ``[h]`` (GRU) or
        ``[h, c]`` (LSTM), each ``[B, units]``."""
        n = 1 if self.cell == "gru" else 2
        return [ops.zeros((batch_size, self.units), "float32") for _ in range(n)]

    def step(self, state, inputs, training=False):
        """Advances every session by one event (``inputs["items"]`` ``[B]``).

        Returns ``(logits [B, num_items], new_state)``; stepping a session from
        :meth:`initial_state` item by item gives the scores of
        :meth:`prefix_logits` on its whole history.
        """
        x = self.in_drop(self.item_embedding(inputs["items"]), training=training)
        h, new_state = self.rnn.cell(x, list(state), training=training)
        return self.decode(h, training=training), list(new_state)

    def get_config(self):
        return {**super().get_config(), "cell": self.cell, "embedding_dim": self.embedding_dim,
                "units": self.units, "input_dropout": self.input_dropout,
                "decoder_dropout": self.decoder_dropout}


@register("gru4rec_ce", model_config=dict(TABLE), test_config=dict(TINY),
          description="GRU4REC as in HCRNN's table: GRU over the prefix, full softmax, cross-entropy.")
@keras.saving.register_keras_serializable(package="tfrec")
class GRU4RecCE(RNN4Rec):
    """GRU4REC in the prefix / cross-entropy form of the HCRNN paper's table (see :class:`RNN4Rec`)."""

    default_cell = "gru"


@register("lstm4rec", model_config=dict(TABLE), test_config=dict(TINY),
          description="LSTM4REC: LSTM over the prefix, full softmax, cross-entropy.")
@keras.saving.register_keras_serializable(package="tfrec")
class LSTM4Rec(RNN4Rec):
    """LSTM4REC (HCRNN's table): :class:`RNN4Rec` with an LSTM."""

    default_cell = "lstm"


# ------------------------------------------------------------ faithful GRU4Rec
def bpr_max_session_loss_t(scores_t, valid=None, num_extra: int = 0, reg: float = 1.0):
    """:func:`tfrec.losses.session_loss` for ``"bpr_max"`` on *transposed* scores
    ``[B + num_extra, B]`` (column ``b`` = lane ``b``'s scores): the same value, with
    every reduction over axis 0. The dense training step scores the items as
    ``W @ h^T`` and takes rows, so the batch's score matrix, the loss and their
    gradients stay in that layout (XLA otherwise transposes the ``[B, B + S]``
    matrices back and forth around the column gather; about 10% of a step's CPU).

    Args:
        scores_t: ``[B + num_extra, B]`` scores (after the final activation).
        valid: bool ``[B]`` lanes holding data (``None``: all).
        num_extra: number of shared sampled negatives (the last rows).
        reg: BPR-max score regulariser.

    Example:

    >>> s = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 0.5]], "float32")  # [B=2, B+1]
    >>> a = float(L.session_loss("bpr_max", s, num_extra=1))
    >>> b = float(bpr_max_session_loss_t(s.T, num_extra=1))
    >>> abs(a - b) < 1e-6
    True
    """
    B = ops.shape(scores_t)[1]
    eye = ops.cast(ops.eye(B), "bool")
    neg = ops.logical_not(eye)  # symmetric: row c, column b = "target of lane c is a negative of lane b"
    if valid is not None:
        neg = ops.logical_and(neg, ops.expand_dims(ops.cast(valid, "bool"), 1))
    if num_extra:
        neg = ops.concatenate([neg, ops.ones((num_extra, B), "bool")], axis=0)
    m = ops.cast(neg, scores_t.dtype)
    big = ops.max(scores_t - (1.0 - m) * 1e9, axis=0, keepdims=True)
    e = ops.exp(ops.minimum(scores_t - big, 0.0)) * m
    s = ops.divide_no_nan(e, ops.sum(e, axis=0, keepdims=True))
    r_i = ops.expand_dims(ops.diagonal(scores_t[:B]), 0)
    per = -ops.log(ops.sum(s * ops.sigmoid(r_i - scores_t), axis=0) + L.BPR_MAX_EPS)
    per = per + reg * ops.sum(s * scores_t**2, axis=0)
    if valid is not None:
        per = per * ops.cast(valid, per.dtype)
    return ops.sum(per) / ops.cast(B, per.dtype)


def num_session_steps_bound(seqs: SequenceSet, batch_size: int) -> int:
    """Upper bound of the number of session-parallel steps for any sequence order:
    lanes take the next sequence greedily, so (list scheduling) the number of steps
    is at most ``ceil(sum(L - 1) / B) + max(L - 1)``."""
    L = seqs.lengths[seqs.lengths >= 2].astype(np.int64) - 1
    if not len(L):
        return 0
    return int(-(-L.sum() // batch_size) + L.max())


def session_step_arrays(seqs: SequenceSet, batch_size: int, seed: int = 0, shuffle: bool = True,
                        epoch: int = 0, num_steps: Optional[int] = None) -> dict:
    """One pass of GRU4Rec session-parallel steps as arrays ``[num_steps, batch_size]``:
    ``items``/``targets`` int32, ``reset``/``valid`` int8 (flags travel as int8: Keras
    reduces input batches across replicas under tf.distribute, which has no kernel for
    bool). Steps after the last real one (up to ``num_steps``, default
    :func:`num_session_steps_bound`) are padding: ``valid`` all 0."""
    n = num_session_steps_bound(seqs, batch_size) if num_steps is None else int(num_steps)
    out = {"items": np.zeros((n, batch_size), np.int32), "targets": np.zeros((n, batch_size), np.int32),
           "reset": np.zeros((n, batch_size), np.int8), "valid": np.zeros((n, batch_size), np.int8)}
    for k, (inp, tgt, reset, valid) in enumerate(session_parallel_batches(seqs, batch_size, shuffle, seed, epoch)):
        out["items"][k], out["targets"][k], out["reset"][k], out["valid"][k] = inp, tgt, reset, valid
    return out


def session_step_dataset(seqs: SequenceSet, batch_size: int, seed: int = 0, shuffle: bool = True,
                         chunk: int = 1, epoch_fn=None):
    """``tf.data`` of GRU4Rec session-parallel steps: ``{"items", "targets", "reset",
    "valid"}``, one element per step (``[batch_size]`` each) or, with ``chunk > 1``,
    per ``chunk`` consecutive steps (``[batch_size, chunk]``: lanes first, so a
    ``tf.distribute`` strategy splits lanes, not steps). A new pass (Keras epoch)
    reshuffles the sequence order with ``(seed, epoch)``; each pass is precomputed
    in numpy (:func:`session_step_arrays`).

    The number of steps depends on the order, so every pass is padded with
    all-invalid steps (``valid`` all 0; the model skips them) to the fixed
    :func:`num_session_steps_bound` rounded up to whole chunks, which Keras needs
    for equal epochs.

    The shuffle of a pass uses ``epoch_fn()`` when given and not ``None`` (e.g.
    the Keras epoch being trained, robust to extra iterators that a distribution
    strategy may open), else the number of passes started so far.
    """
    import tensorflow as tf

    chunk = max(int(chunk), 1)
    n = -(-num_session_steps_bound(seqs, batch_size) // chunk)  # elements per pass
    counter = {"epoch": 0}
    keys = ("items", "targets", "reset", "valid")

    def gen():
        e = epoch_fn() if epoch_fn is not None else None
        if e is None:
            e = counter["epoch"]
            counter["epoch"] += 1
        arr = session_step_arrays(seqs, batch_size, seed, shuffle, e, num_steps=n * chunk)
        for j in range(n):
            if chunk == 1:
                yield {k: arr[k][j] for k in keys}
            else:
                yield {k: np.ascontiguousarray(arr[k][j * chunk:(j + 1) * chunk].T) for k in keys}

    shape = [batch_size] if chunk == 1 else [batch_size, chunk]
    sig = {"items": tf.TensorSpec(shape, tf.int32), "targets": tf.TensorSpec(shape, tf.int32),
           "reset": tf.TensorSpec(shape, tf.int8), "valid": tf.TensorSpec(shape, tf.int8)}
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n)).prefetch(max(2, 64 // chunk))
    return ds.with_options(generator_options())


@register("gru4rec",
          model_config={"units": 224, "loss": "bpr_max", "n_sample": 2048, "sample_alpha": 0.4,
                        "bpreg": 1.95, "elu_param": 0.5, "dropout_embed": 0.5, "dropout_hidden": 0.05,
                        "constrained_embedding": True, "batch_size": 80},
          fit_config={"optimizer": "adagradm", "learning_rate": 0.05, "momentum": 0.4,
                      "epsilon": 1e-6, "epochs": 10, "patience": None},
          test_config={"units": 8, "n_sample": 16, "batch_size": 8},
          description="GRU4Rec (Hidasi et al.): session-parallel, ranking losses, sampled negatives.")
@keras.saving.register_keras_serializable(package="tfrec")
class GRU4Rec(SequentialRecommender):
    """GRU4Rec faithful to the authors' training procedure.

    Training (``session_parallel=True``, default): ``batch_size`` lanes walk
    through the training sequences; at each step a lane's hidden state is zeroed
    *before* the step if its input starts a new sequence, the GRU advances one
    event, and every lane's output is scored against the targets of all lanes
    (mini-batch negatives) plus ``n_sample`` items drawn with probability
    proportional to ``count^sample_alpha`` shared by the batch. The loss
    (:mod:`tfrec.losses`) is summed over lanes and divided by ``batch_size``; one
    optimizer step per session-parallel step. With ``session_parallel=False`` the
    model trains like any causal model on ``layout`` with full-softmax CE.

    Evaluation resets: every evaluated sequence starts from a zero state.

    Under a multi-replica ``tf.distribute`` strategy each replica owns a contiguous
    slice of the lanes (replica-local :class:`~tfrec.layers.state.LaneState`) and
    the step keeps the one-device math (see :meth:`replica_session_step`);
    ``batch_size`` must be divisible by the number of replicas.

    Args:
        num_items: classes including padding 0.
        units: GRU size (= embedding size when ``constrained_embedding``).
        loss: ``cross_entropy``, ``top1``, ``bpr``, ``top1_max`` or ``bpr_max``.
        n_sample: extra popularity-sampled negatives per step (0: none).
        sample_alpha: popularity exponent of the sampler.
        bpreg: BPR-max score regulariser.
        elu_param: final activation ELU(alpha) on the scores for the ranking
            losses (0: linear). Monotone, so rankings at evaluation are unchanged.
        dropout_embed, dropout_hidden: dropout on the input embedding and on the
            GRU output (the dropped-out output is the carried state, as in the
            official code).
        constrained_embedding: the input embedding is the output item matrix.
        embedding_dim: input embedding size when not constrained (0: ``units``).
        session_parallel: train with session-parallel steps (see above).
        session_chunk: session-parallel steps per dataset element; the steps of a
            chunk run one after the other in one compiled call (same math as one
            step per element, much less per-step overhead).
        jit_step: compile each training step (forward, gradients, optimizer
            update, state update) with XLA, which fuses the loss's elementwise work.
        **kwargs: ``layout`` (``"sequence"`` by default), ``batch_size``, ``bucket``, ``seed``.
    """

    causal = True

    def __init__(self, num_items, units: int = 100, loss: str = "bpr_max", n_sample: int = 0,
                 sample_alpha: float = 0.5, bpreg: float = 1.0, elu_param: float = 0.5,
                 dropout_embed: float = 0.0, dropout_hidden: float = 0.0,
                 constrained_embedding: bool = True, embedding_dim: int = 0,
                 session_parallel: bool = True, session_chunk: int = 32, jit_step: bool = True,
                 layout: str = "sequence", **kwargs):
        super().__init__(num_items, layout=layout, **kwargs)
        self.units = int(units)
        self.session_chunk = max(int(session_chunk), 1)
        self.jit_step = bool(jit_step)
        self.loss_name = L.loss_from_config(loss)
        self.probabilistic = self.loss_name == "cross_entropy"
        self.n_sample, self.sample_alpha = int(n_sample), float(sample_alpha)
        self.bpreg, self.elu_param = float(bpreg), float(elu_param)
        self.dropout_embed, self.dropout_hidden = float(dropout_embed), float(dropout_hidden)
        self.constrained_embedding = bool(constrained_embedding)
        self.embedding_dim = self.units if self.constrained_embedding else int(embedding_dim or units)
        self.session_parallel = bool(session_parallel)
        n, h = self.num_items, self.units
        s_out = math.sqrt(6.0 / (n + h))
        s_gru = math.sqrt(6.0 / (self.embedding_dim + h))
        s_rec = math.sqrt(6.0 / (2 * h))
        self.item_out = layers.Embedding(n, h, name="item_output",
                                         embeddings_initializer=keras.initializers.RandomUniform(-s_out, s_out, seed=self.seed))
        self.item_bias = layers.Embedding(n, 1, name="item_bias", embeddings_initializer="zeros")
        if not self.constrained_embedding:
            s_in = math.sqrt(6.0 / (n + self.embedding_dim))
            self.item_in = layers.Embedding(n, self.embedding_dim, name="item_input",
                                            embeddings_initializer=keras.initializers.RandomUniform(-s_in, s_in, seed=self.seed + 1))
        self.gru_cell = layers.GRUCell(
            h, reset_after=True, name="gru_cell",
            kernel_initializer=keras.initializers.RandomUniform(-s_gru, s_gru, seed=self.seed + 2),
            recurrent_initializer=keras.initializers.RandomUniform(-s_rec, s_rec, seed=self.seed + 3),
            bias_initializer="zeros")
        self.rnn = layers.RNN(self.gru_cell, return_sequences=True, name="gru")
        self.drop_embed = layers.Dropout(self.dropout_embed)
        self.drop_hidden = layers.Dropout(self.dropout_hidden)
        self.seed_gen = keras.random.SeedGenerator(self.seed + 4)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # the lanes' hidden states: replica-local (each replica holds its own lanes),
        # transient (not a weight, not saved)
        lane_state(self, (self.units,), "session_state", batch_size=self.batch_size)
        self.sample_logits = None
        self.build()  # all shapes are known from the config

    @property
    def session_state(self):
        """The lanes' hidden states, a :class:`~tfrec.layers.state.LaneState`
        (``[batch_size, units]`` globally; each replica holds its own lanes)."""
        return lane_states(self)[0]

    def load_own_variables(self, store):
        # .keras files written before the lane states became replica-local hold them
        # as the model's first own weight ([batch_size, units]); they are transient
        own = len(self._trainable_variables) + len(self._non_trainable_variables)
        if len(store.keys()) == own + 1:
            first = np.asarray(store["0"])
            if first.shape == (self.batch_size, self.units):
                store = {str(i): store[str(i + 1)] for i in range(own)}
        super().load_own_variables(store)

    # ------------------------------------------------------------- network
    def build(self, input_shape=None):
        if self.built:
            return
        self.item_out.build((None,))
        self.item_bias.build((None,))
        if not self.constrained_embedding:
            self.item_in.build((None,))
        self.gru_cell.build((None, self.embedding_dim))
        self.rnn.build((None, None, self.embedding_dim))
        self.sample_logits = self.add_weight(shape=(self.num_items,), initializer="zeros",
                                             trainable=False, name="sample_logits")
        self.built = True

    def embed(self, items, training=False):
        table = self.item_out if self.constrained_embedding else self.item_in
        return self.drop_embed(table(items), training=training)

    def encode_sequence(self, inputs, training=False):
        return self.rnn(self.embed(inputs["items"], training), training=training)

    def decode(self, h, training=False):
        return ops.matmul(h, ops.transpose(self.item_out.embeddings)) + ops.squeeze(self.item_bias.embeddings, -1)

    # ------------------------------------------------- O(1) serving step
    def initial_state(self, batch_size):
        """Zero hidden state ``[h]`` (``[B, units]``) for ``batch_size`` sessions."""
        return [ops.zeros((batch_size, self.units), "float32")]

    def step(self, state, inputs, training=False):
        """Advances every session by one event (``inputs["items"]`` ``[B]``);
        returns ``(logits [B, num_items], [h])``, the scores :meth:`prefix_logits`
        gives for the whole history."""
        out, _ = self.gru_cell(self.embed(inputs["items"], training), [state[0]], training=training)
        out = self.drop_hidden(out, training=training)
        return self.decode(out), [out]

    def session_forward(self, items, reset, state, training=False):
        """One session-parallel step: zero the state of lanes whose input starts a
        new sequence, then advance the GRU. Returns ``(output, new_state)``."""
        state = ops.where(ops.expand_dims(ops.cast(reset, "bool"), -1), ops.zeros_like(state), state)
        out, _ = self.gru_cell(self.embed(items, training), [state], training=training)
        out = self.drop_hidden(out, training=training)
        return out, out

    def sampled_scores(self, out, targets, samples):
        """Scores ``[B, B + S]`` of each lane's output against the batch's targets
        and the shared samples (GRU4Rec's mini-batch + sampled negatives)."""
        cols = targets if samples is None else ops.concatenate([targets, samples], axis=0)
        w = self.item_out(cols)
        b = ops.squeeze(self.item_bias(cols), -1)
        scores = ops.matmul(out, ops.transpose(w)) + b
        if self.elu_param > 0 and self.loss_name != "cross_entropy":
            scores = ops.elu(scores, alpha=self.elu_param)
        return scores

    def sampled_scores_dense(self, out, targets, samples):
        """:meth:`sampled_scores` computed by scoring every item and taking the
        batch's columns: the same values, cheaper when the columns outnumber the
        items (e.g. 2,048 samples + 80 targets over 1,981 classes), and the output
        table's gradient is dense (no row gather/scatter)."""
        cols = ops.concatenate([targets, samples], axis=0)
        full = ops.matmul(out, ops.transpose(self.item_out.embeddings)) + ops.squeeze(self.item_bias.embeddings, -1)
        scores = ops.take(full, cols, axis=1)
        if self.elu_param > 0 and self.loss_name != "cross_entropy":
            scores = ops.elu(scores, alpha=self.elu_param)
        return scores

    def sampled_scores_dense_t(self, out, targets, samples):
        """:meth:`sampled_scores_dense` transposed, ``[B + S, B]``: every item scored as
        ``W @ out^T`` and the batch's columns taken as rows (contiguous gathers; see
        :func:`bpr_max_session_loss_t`)."""
        cols = ops.concatenate([targets, samples], axis=0)
        full_t = ops.matmul(self.item_out.embeddings, ops.transpose(out)) + self.item_bias.embeddings
        scores_t = ops.take(full_t, cols, axis=0)
        if self.elu_param > 0 and self.loss_name != "cross_entropy":
            scores_t = ops.elu(scores_t, alpha=self.elu_param)
        return scores_t

    @property
    def dense_scoring(self) -> bool:
        """Training scores all items (:meth:`sampled_scores_dense`) when the step's
        columns (``batch_size + n_sample``) are at least as many as the items."""
        return self.n_sample > 0 and self.batch_size + self.n_sample >= self.num_items

    # ------------------------------------------------------------ training
    def draw_samples(self):
        """The step's ``n_sample`` popularity-sampled extra negatives (``None`` without)."""
        if not self.n_sample:
            return None
        return ops.cast(keras.random.categorical(
            ops.expand_dims(self.sample_logits, 0), self.n_sample, seed=self.seed_gen)[0], "int32")

    def apply_session_step(self, items, targets, reset, valid, samples):
        """One optimizer step on one session-parallel step (the lanes' state is read
        and written in ``session_state``); returns the loss. Compiled with XLA when
        ``jit_step`` (see :meth:`train_step`)."""
        import tensorflow as tf

        valid = ops.cast(valid, "bool")
        dense = self.dense_scoring and isinstance(self.optimizer, AdagradM)
        with tf.GradientTape() as tape:
            out, new_state = self.session_forward(items, reset, self.session_state.read(), training=True)
            if dense and self.loss_name == "bpr_max":  # the recipe: transposed layout (same values)
                loss = bpr_max_session_loss_t(self.sampled_scores_dense_t(out, targets, samples), valid,
                                              self.n_sample, self.bpreg)
            else:
                if dense:
                    scores = self.sampled_scores_dense(out, targets, samples)
                else:
                    scores = self.sampled_scores(out, targets, samples)
                loss = L.session_loss(self.loss_name, scores, valid, self.n_sample, self.bpreg)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        if dense:
            # the rows an IndexedSlices gradient would have had: scored columns
            # (+ the input items for the tied table)
            cols = ops.concatenate([targets, samples], axis=0)
            n = self.num_items
            scored = tf.math.unsorted_segment_max(tf.ones_like(cols, tf.int32), cols, n) > 0
            out_rows = scored
            if self.constrained_embedding:
                out_rows = tf.logical_or(
                    scored, tf.math.unsorted_segment_max(tf.ones_like(items, tf.int32), items, n) > 0)
            rows = [(self.item_bias.embeddings, scored), (self.item_out.embeddings, out_rows)]
            dense_ids = {id(v) for v, _ in rows}
            grads = [tf.convert_to_tensor(g) if id(v) in dense_ids and isinstance(g, tf.IndexedSlices) else g
                     for g, v in zip(grads, variables)]
            self.optimizer.apply_gradients_with_rows(zip(grads, variables), rows)
        else:
            self.optimizer.apply_gradients(zip(grads, variables))
        self.session_state.assign(ops.where(ops.expand_dims(valid, -1), new_state, ops.zeros_like(new_state)))
        return loss

    def replica_session_step(self, items, targets, reset, valid):
        """One session-parallel step inside one replica of a multi-replica strategy,
        the same math as the one-device step: every lane is scored against the
        targets of *all* replicas' lanes (all-gathered: the global mini-batch
        negatives) and the same ``n_sample`` negatives (replica 0's draw); the loss is
        this replica's lanes' sum divided by the *global* batch size, so the summed
        gradients equal the one-device gradients. Steps without a valid lane in any
        replica skip the optimizer (decided in cross-replica context, as Keras'
        ``LossScaleOptimizer`` skips steps, since a synchronisation point cannot sit
        in replica-side control flow). Dropout masks are drawn per replica."""
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        n = ctx.num_replicas_in_sync
        b = self.session_state.per_replica_batch_size
        valid_i = tf.cast(tf.cast(valid, tf.bool), tf.int32)
        all_targets = ctx.all_gather(tf.cast(targets, tf.int32), axis=0)
        all_valid = ctx.all_gather(valid_i, axis=0)
        any_valid = tf.reduce_any(all_valid > 0)
        samples = None
        if self.n_sample:  # drawn on real steps only, as on one device; shared by the global batch
            samples = tf.cond(any_valid, self.draw_samples, lambda: tf.zeros([self.n_sample], tf.int32))
            samples = ctx.all_gather(samples[None], axis=0)[0]
        # this replica's lanes first, then the other replicas' (in ring order)
        shift = -b * tf.cast(ctx.replica_id_in_sync_group, tf.int32)
        col_targets, col_valid = tf.roll(all_targets, shift, 0), tf.roll(all_valid, shift, 0)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            out, new_state = self.session_forward(items, reset, self.session_state.read(), training=True)
            scores = self.sampled_scores(out, col_targets, samples)
            negatives = tf.logical_and(tf.logical_not(tf.eye(b, b * n, dtype=tf.bool)), (col_valid > 0)[None, :])
            if self.n_sample:
                negatives = tf.concat([negatives, tf.ones((b, self.n_sample), tf.bool)], axis=1)
            per = L.per_example_loss(self.loss_name, scores, negatives, self.bpreg)
            loss = tf.reduce_sum(per * tf.cast(valid_i, per.dtype)) / float(b * n)
        grads = tape.gradient(loss, variables)

        def apply_in_cross_replica(distribution, grads, any_valid):
            flag = distribution.experimental_local_results(any_valid)[0]  # equal on every replica

            def apply():
                distribution.extended.call_for_each_replica(
                    lambda g: self.optimizer.apply_gradients(zip(g, variables)), args=(grads,))
                return tf.constant(True)

            tf.cond(flag, apply, lambda: tf.constant(False))

        ctx.merge_call(apply_in_cross_replica, args=(grads, any_valid))
        self.session_state.assign(tf.where(tf.cast(valid_i, tf.bool)[:, None], new_state,
                                           tf.zeros_like(new_state)))
        # the metric sums replicas on read: n * (this replica's share) averages to the global loss
        self.loss_tracker.update_state(loss * n, sample_weight=tf.cast(any_valid, tf.float32))

    def _step_fn(self):
        fn = self.__dict__.get("_jit_session_step")
        if fn is None:
            import tensorflow as tf

            fn = tf.function(self.apply_session_step, jit_compile=True, autograph=False)
            self.__dict__["_jit_session_step"] = fn
        return fn

    def train_step(self, data):
        """Session-parallel training on one dataset element: one step (``[B]`` tensors)
        or a chunk of consecutive steps (``[B, K]``, lanes first), run in order by an
        in-graph loop so that Python and Keras are entered once per chunk. Each step
        draws its negatives, then (XLA-compiled when ``jit_step``) computes the loss,
        its gradients, the optimizer update and the lanes' new state. Steps without
        any valid lane (padding at the end of a pass) are skipped entirely."""
        if not self.session_parallel:
            return super().train_step(data)
        import tensorflow as tf

        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        cols = {k: tf.convert_to_tensor(data[k]) for k in ("items", "targets", "reset", "valid")}
        if cols["items"].shape.rank == 1:
            cols = {k: v[:, None] for k, v in cols.items()}
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            if cols["items"].shape[1] != 1:
                raise ValueError("under a multi-replica strategy GRU4Rec trains one session-parallel step "
                                 "per dataset element (make_dataset does this); got chunks of "
                                 f"{cols['items'].shape[1]} steps")
            self.replica_session_step(*(cols[k][:, 0] for k in ("items", "targets", "reset", "valid")))
            return {"loss": self.loss_tracker.result()}
        apply = self._step_fn() if self.jit_step else self.apply_session_step

        def one(k):
            items, targets = cols["items"][:, k], cols["targets"][:, k]
            reset, valid = cols["reset"][:, k], cols["valid"][:, k]

            def step():
                loss = apply(items, targets, reset, valid, self.draw_samples())
                self.loss_tracker.update_state(loss)
                return tf.constant(0)

            # padding steps (no valid lane): no sampling, no optimizer step, state untouched
            tf.cond(tf.reduce_any(tf.cast(valid, tf.bool)), step, lambda: tf.constant(0))

        K = cols["items"].shape[1]
        if K == 1:
            one(0)
        else:
            tf.while_loop(lambda k: k < K, lambda k: (one(k), k + 1)[1], [tf.constant(0)])
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker] if self.session_parallel else super().metrics

    def make_dataset(self, seqs: SequenceSet, shuffle: bool = True, batch_size: Optional[int] = None):
        if not self.session_parallel:
            return super().make_dataset(seqs, shuffle, batch_size)
        if batch_size not in (None, self.batch_size):
            raise ValueError("session-parallel batch size is fixed by the model's batch_size")
        # under several replicas each element is one step (a replica cannot run a loop
        # of optimizer steps: they synchronise); Keras' steps_per_execution still applies
        chunk = self.session_chunk if self.distribute_strategy.num_replicas_in_sync == 1 else 1
        return session_step_dataset(seqs, self.batch_size, self.seed, shuffle, chunk=chunk,
                                    epoch_fn=lambda: self.__dict__.get("_train_epoch"))

    def set_sampler(self, counts):
        """Sets the extra-negative sampler from training item counts."""
        self.build()
        self.sample_logits.assign(np.maximum(L.popularity_sampler_logits(counts, self.sample_alpha), -1e9))

    def fit(self, x=None, y=None, **kwargs):
        if not isinstance(x, SequenceDataset):
            return super().fit(x, y, **kwargs)
        self.set_sampler(x.train.item_counts(self.num_items))
        self.session_state.reset()
        return super().fit(x, y, **kwargs)  # the base fit records the Keras epoch for the shuffle

    def session_parallel_scores(self, seqs: SequenceSet, batch_size: Optional[int] = None):
        """Scores of every target, computed session-parallel with resets (as the
        official evaluation does); returns ``(scores [n, N], targets [n])`` in
        step order. Used to check the lanes' reset logic against whole-sequence scoring."""
        self.build()
        bs = batch_size or self.batch_size
        state = ops.zeros((bs, self.units))
        all_scores, all_targets = [], []
        for inp, tgt, reset, valid in session_parallel_batches(seqs, bs):
            out, state = self.session_forward(ops.convert_to_tensor(inp), reset, state)
            sc = ops.convert_to_numpy(self.decode(out))
            all_scores.append(sc[valid])
            all_targets.append(tgt[valid])
        return np.concatenate(all_scores), np.concatenate(all_targets)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "loss": self.loss_name,
                "n_sample": self.n_sample, "sample_alpha": self.sample_alpha, "bpreg": self.bpreg,
                "elu_param": self.elu_param, "dropout_embed": self.dropout_embed,
                "dropout_hidden": self.dropout_hidden,
                "constrained_embedding": self.constrained_embedding,
                "embedding_dim": self.embedding_dim, "session_parallel": self.session_parallel,
                "session_chunk": self.session_chunk, "jit_step": self.jit_step}
