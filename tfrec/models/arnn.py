"""ARNN: an RNN session model augmented with a PNN user-context encoder (Song & Lee 2018).

* :class:`PNN` (registry ``pnn``) -- the PNN context encoder with its own softmax
  head: the user's static context fields plus the previous item ``y_{t-1}`` ->
  field embeddings -> ``[p_t; z_t]`` -> FC + ReLU + BN -> ``c_t`` -> item scores.
  Trained with TOP1 on GRU4Rec's session-parallel mini-batches (the other lanes'
  targets are the negatives), Adagrad, as the paper pretrains it (§3.2, §4.3).
* :class:`ARNN` (registry ``arnn``) -- ``r_t = head(M([c_t; h_t]))`` with
  ``M`` = FC + ReLU + BN (§3.5), ``c_t`` from a pretrained :class:`PNN` and ``h_t``
  from a pretrained session model (default: the faithful ``gru4rec``; any causal
  tfrec model exposing ``encode_sequence -> [B, T, H]`` can be plugged in). Both
  components lose their softmax heads and are frozen; the PNN's batch-norm layer
  stays trainable when ``train_pnn_batch_norm`` (the paper found this slightly
  better, footnote 2). The merge layer and new head are trained with TOP1 on
  session-parallel batches.

Two-stage training is one call: ``ARNN.fit(dataset)`` (so ``tfrec train arnn``)
pretrains the PNN and the session model with validation-based best-epoch
selection each, then trains the merge stage, also with best-epoch selection.
:func:`train_arnn` does the same from Python and returns the model.

How the frozen session model is used in the merge stage: since it is frozen (and
run in inference mode), its state ``h_t`` at every training event is a fixed
function of the session so far. It is computed once for all training events with
``encode_sequence`` (each session from a zero state, exactly the state a
session-parallel lane reaches after reset), and the merge stage then draws
session-parallel batches of events with their ``h_t``. The PNN runs live, so its
batch-norm layer can keep learning.

Context per event: ``x["user"]`` (the batch's user index) looks up the user's
context codes (:class:`tfrec.data.context.UserContext`, stored in the model
config); the previous item is the last field.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import keras
import numpy as np
from keras import ops

from tfrec.data.context import MOVIELENS_FIELDS, UserContext, user_context
from tfrec.data.pipelines import Batcher, session_parallel_batches, to_tf_dataset
from tfrec.data.schema import SequenceDataset, SequenceSet
from tfrec.layers.pnn import PNNEncoder, apply_flat
from tfrec.models.base import SequentialRecommender, masked_sparse_ce, scale_for_replicas
from tfrec.models.registry import register

PAPER_PNN = {"embedding_dim": 10, "hidden": 100, "dropout": 0.0}
#: the session model of the paper: GRU4REC, TOP1 over mini-batch negatives, 100 units.
PAPER_SESSION = {"units": 100, "loss": "top1", "n_sample": 0, "elu_param": 0.0,
                 "dropout_embed": 0.0, "dropout_hidden": 0.2, "batch_size": 50}
ADAGRAD = {"optimizer": "adagrad", "learning_rate": 0.05, "epsilon": 1e-6}


# ------------------------------------------------------------------ batches
def session_parallel_events(seqs: SequenceSet, batch_size: int, shuffle: bool = False,
                            seed: int = 0, epoch: int = 0, min_events: int = 1):
    """GRU4Rec's session-parallel mini-batches as flat event indices.

    Yields, per step, the indices (into ``seqs.items``) of the input events of the
    lanes that hold data; each target is the next event (index + 1). Built on
    :func:`~tfrec.data.pipelines.session_parallel_batches`, so lanes, resets and the
    per-epoch shuffle are exactly GRU4Rec's; only positions ``>= target_start``
    are targets. Steps with fewer than ``min_events`` events (lanes running dry at the
    end of a pass) are skipped.
    """
    n = seqs.num_events
    idx = SequenceSet(np.arange(1, n + 1, dtype=np.int32), seqs.offsets, seqs.target_start)
    seq_of = np.repeat(np.arange(len(seqs)), seqs.lengths)
    pos = np.arange(n) - seqs.offsets[seq_of]
    for inp, _, _, valid in session_parallel_batches(idx, batch_size, shuffle, seed, epoch):
        e = inp[valid].astype(np.int64) - 1
        e = e[pos[e] + 1 >= seqs.target_start[seq_of[e]]]
        if len(e) >= max(min_events, 1):
            yield e


def top1_in_batch(y, logits):
    """TOP1 over mini-batch negatives for event batches: ``logits [B, N]`` scored at
    the batch's targets ``y [B]`` give ``scores [B, B]`` (diagonal = positives), then
    :func:`tfrec.losses.session_loss` (mean over negatives, summed over rows / ``B``)."""
    from tfrec import losses

    scores = ops.take(logits, ops.cast(y, "int32"), axis=1)
    return losses.session_loss("top1", scores)


# ---------------------------------------------------------- shared base
class _ContextModel(SequentialRecommender):
    """Shared plumbing of PNN and ARNN: context lookup, event-mode training on
    session-parallel batches, TOP1/CE loss, build-for-loading."""

    causal = True
    input_features = ("items", "user")

    def __init__(self, num_items, context_codes, context_cardinalities,
                 context_fields: Optional[Sequence[str]] = None, loss: str = "top1",
                 batch_size: int = 50, layout: str = "sequence", **kwargs):
        super().__init__(num_items, layout=layout, batch_size=batch_size, **kwargs)
        codes = np.asarray(context_codes, np.int32)
        if codes.size == 0:
            codes = codes.reshape(max(len(codes), 1), 0)
        if codes.ndim != 2 or codes.shape[1] != len(context_cardinalities):
            raise ValueError(f"context_codes must be [num_users, {len(context_cardinalities)}]")
        self.context_codes = codes
        self.context_cardinalities = [int(c) for c in context_cardinalities]
        self.context_fields = list(context_fields or [f"f{i}" for i in range(codes.shape[1])])
        if loss not in ("top1", "cross_entropy"):
            raise ValueError(f"loss must be 'top1' or 'cross_entropy', got {loss!r}")
        self.loss_name = loss
        self.probabilistic = loss == "cross_entropy"
        if not self.context_cardinalities:  # no user context: the previous item is the only field
            self.input_features = ("items",)

    @classmethod
    def context_from_dataset(cls, data: SequenceDataset, context_fields=None, coverage=None,
                             shuffle_context=None) -> UserContext:
        if not data.user_features or context_fields == []:
            n = max(data.num_users, 1)
            return UserContext(np.zeros((n, 0), np.int32), (), ())
        if context_fields is None:
            context_fields = [f for f in MOVIELENS_FIELDS if f in data.user_features] or None
        ctx = user_context(data, context_fields, coverage)
        if shuffle_context is not None and shuffle_context is not False:
            ctx = ctx.shuffled(int(shuffle_context))
        return ctx

    @property
    def field_cardinalities(self):
        """Cardinalities of the PNN fields: the context fields, then the previous item."""
        return self.context_cardinalities + [self.num_items]

    def field_codes(self, inputs):
        """``[B, F + 1]`` (event inputs) or ``[B, T, F + 1]`` (sequences): the user's
        context codes followed by the previous item."""
        table = ops.convert_to_tensor(self.context_codes, "int32")  # a graph constant
        items = ops.cast(inputs["items"], "int32")
        if not self.context_cardinalities:
            return items[..., None]
        user = ops.clip(ops.cast(inputs["user"], "int32"), 0, self.context_codes.shape[0] - 1)
        ctx = ops.take(table, user, axis=0)  # [B, F]
        if len(items.shape) == 1:
            return ops.concatenate([ctx, items[:, None]], axis=-1)
        ctx = ops.broadcast_to(ctx[:, None, :], (ops.shape(items)[0], ops.shape(items)[1], ctx.shape[-1]))
        return ops.concatenate([ctx, items[..., None]], axis=-1)

    # ---------------------------------------------------------- forward
    def encode_events(self, inputs, training=False):  # pragma: no cover - interface
        raise NotImplementedError

    def call(self, inputs, training=False):
        if len(inputs["items"].shape) == 1:  # a session-parallel step of events
            return ops.cast(self.decode(self.encode_events(inputs, training), training), "float32")
        return super().call(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.loss_name == "top1" and len(y.shape) == 1:
            loss = top1_in_batch(y, y_pred)
        else:
            loss = masked_sparse_ce(y, y_pred, sample_weight)
        return scale_for_replicas(loss)

    # --------------------------------------------------------- training
    def event_features(self, seqs: SequenceSet, events: np.ndarray) -> dict:
        """Inputs of the events ``events`` (flat indices into ``seqs``)."""
        return {"items": seqs.items[events], "user": self._event_users[events]}

    def make_dataset(self, seqs: SequenceSet, shuffle: bool = True, batch_size: Optional[int] = None):
        """Session-parallel event batches: ``x`` of the lanes' input events, ``y`` their next items."""
        bs = batch_size or self.batch_size
        # several replicas split every step: each needs events (an empty TOP1 batch is 0/0)
        replicas = self.distribute_strategy.num_replicas_in_sync
        min_events = 1 if replicas == 1 else 2 * replicas
        self._event_users = (np.repeat(seqs.users, seqs.lengths) if seqs.users is not None
                             else np.zeros(seqs.num_events, np.int32))

        def make(_):
            # one endless stream of session-parallel steps over reshuffled epochs; fit
            # cuts it into Keras epochs of ``steps_per_epoch`` steps (the number of steps
            # of one pass depends on the shuffled order, so passes cannot be Keras epochs)
            for epoch in itertools.count():
                for e in session_parallel_events(seqs, bs, shuffle, self.seed, epoch, min_events):
                    yield self.event_features(seqs, e), seqs.items[e + 1].astype(np.int32)

        return to_tf_dataset(make, next(iter(make(0))), num_batches=None)

    def fit(self, x=None, y=None, **kwargs):
        if isinstance(x, SequenceDataset):  # a Keras epoch = the steps of one unshuffled pass
            if not self.built:  # e.g. BackupAndRestore needs a built model
                with self.distribute_strategy.scope():
                    self.build_from_config({})
            kwargs.setdefault("steps_per_epoch", sum(1 for _ in session_parallel_events(x.train, self.batch_size)))
        return super().fit(x, y, **kwargs)

    # ------------------------------------------------------------ saving
    def dummy_inputs(self):
        return {"items": np.array([[1, 1]], np.int32), "user": np.array([0], np.int32)}

    def get_build_config(self):
        return {"dummy": True}

    def build_from_config(self, config):
        self(self.dummy_inputs(), training=False)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(context_codes=self.context_codes.tolist(),
                   context_cardinalities=self.context_cardinalities,
                   context_fields=self.context_fields, loss=self.loss_name)
        return cfg


# --------------------------------------------------------------------- PNN
@register("pnn", model_config={**PAPER_PNN, "batch_size": 50},
          fit_config={**ADAGRAD, "epochs": 10, "patience": 3},
          test_config={"embedding_dim": 4, "hidden": 8, "batch_size": 16},
          description="PNN user-context encoder (ARNN's c_t) with a softmax head, TOP1 session-parallel.")
@keras.saving.register_keras_serializable(package="tfrec")
class PNN(_ContextModel):
    """PNN context encoder with its own item head (ARNN §3.3, the paper's PNN baseline).

    ``scores_t = W_o c_t + b_o`` with ``c_t = PNNEncoder(x_user, y_{t-1})``. Only
    the user context and the previous item are seen (no longer history).

    Args:
        num_items: classes including padding 0.
        context_codes: int ``[num_users, F]`` context codes per user index
            (build with :meth:`from_dataset`).
        context_cardinalities: values per context field.
        context_fields: field names (for reports).
        embedding_dim, hidden, dropout: :class:`~tfrec.layers.pnn.PNNEncoder` sizes.
        loss: ``"top1"`` (paper; mini-batch negatives) or ``"cross_entropy"`` (full softmax).
        batch_size: session-parallel lanes.

    Example:

    >>> m = PNN(num_items=6, context_codes=[[0, 0], [1, 2]], context_cardinalities=[2, 3],
    ...         embedding_dim=4, hidden=8)
    >>> m.score_prefix_batch({"items": np.array([[1, 2]]), "user": np.array([1])}).shape
    (1, 6)
    """

    def __init__(self, num_items, context_codes, context_cardinalities, context_fields=None,
                 embedding_dim: int = 10, hidden: int = 100, dropout: float = 0.0, **kwargs):
        super().__init__(num_items, context_codes, context_cardinalities, context_fields, **kwargs)
        self.embedding_dim, self.hidden, self.dropout = int(embedding_dim), int(hidden), float(dropout)
        self.encoder = PNNEncoder(self.field_cardinalities, self.embedding_dim, self.hidden,
                                  self.dropout, name="pnn_encoder")
        self.head = keras.layers.Dense(self.num_items, name="pnn_softmax")

    @classmethod
    def from_dataset(cls, data: SequenceDataset, context_fields=None, coverage=None,
                     shuffle_context=None, **config):
        """Builds the model with the dataset's user context (ml-100k: gender, age,
        occupation, zip prefix); ``shuffle_context=SEED`` permutes it across users."""
        ctx = cls.context_from_dataset(data, context_fields, coverage, shuffle_context)
        return cls(num_items=data.num_items, context_codes=ctx.codes,
                   context_cardinalities=ctx.cardinalities, context_fields=ctx.fields, **config)

    def encode_events(self, inputs, training=False):
        return self.encoder(self.field_codes(inputs), training=training)

    def encode_sequence(self, inputs, training=False):
        return self.encoder(self.field_codes(inputs), training=training)

    def decode(self, h, training=False):
        return self.head(h)

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim, "hidden": self.hidden,
                "dropout": self.dropout}


# -------------------------------------------------------------------- ARNN
def _build_session_model(name: str, data_or_items, config: dict):
    from tfrec.models import registry

    if isinstance(data_or_items, SequenceDataset):
        return registry.build(name, data_or_items, **config)
    spec = registry.get(name)
    return spec.cls(num_items=int(data_or_items), **{**spec.model_config, **config})


@register("arnn",
          model_config={"pnn_config": dict(PAPER_PNN), "session_model": "gru4rec",
                        "session_config": dict(PAPER_SESSION), "merge_hidden": 100,
                        "train_pnn_batch_norm": True, "batch_size": 50,
                        "pnn_fit": {**ADAGRAD, "epochs": 10, "patience": 3},
                        "session_fit": {**ADAGRAD, "epochs": 10, "patience": 3}},
          fit_config={**ADAGRAD, "epochs": 10, "patience": 3},
          test_config={"pnn_config": {"embedding_dim": 4, "hidden": 8},
                       "session_config": {**PAPER_SESSION, "units": 8}, "merge_hidden": 8,
                       "batch_size": 16, "pnn_fit": {**ADAGRAD, "epochs": 1},
                       "session_fit": {**ADAGRAD, "epochs": 1}},
          description="ARNN: frozen PNN context encoder + frozen session RNN, merged (two-stage, TOP1).")
@keras.saving.register_keras_serializable(package="tfrec")
class ARNN(_ContextModel):
    """Augmented RNN: ``scores_t = head(BN(ReLU(W_m [c_t; h_t] + b_m)))`` (§3.5).

    Args:
        num_items: classes including padding 0.
        context_codes, context_cardinalities, context_fields: user context (see :class:`PNN`).
        pnn_config: :class:`PNN` sizes (``embedding_dim``, ``hidden``, ``dropout``).
        session_model: registry name of the session model (``"gru4rec"``), or a
            (trained) causal tfrec model instance.
        session_config: its model config (overrides of the registry defaults).
        merge_hidden: size of the merging layer ``M`` (paper: 100).
        train_pnn_batch_norm: keep the frozen PNN's batch-norm layer trainable in the
            merge stage (paper footnote 2); otherwise it is frozen too (inference mode).
        pnn_fit, session_fit: fit configs of the pretraining stages (optimizer,
            learning_rate, epochs, patience, ...). The merge stage uses the optimizer
            the ARNN is compiled with.
        pretrained: ``"none"``, ``"session"``, ``"pnn"`` or ``"both"`` -- components
            that are already trained and must not be pretrained again by ``fit``.
        pnn: optional :class:`PNN` instance (e.g. already trained) to use.
        batch_size: session-parallel lanes of the merge stage.

    After ``fit``: ``stage_results`` holds the best epoch and validation metrics of
    each pretraining stage; ``best_epoch``/``best_metrics`` are the merge stage's.
    """

    STAGES = ("none", "session", "pnn", "both")

    def __init__(self, num_items, context_codes, context_cardinalities, context_fields=None,
                 pnn_config=None, session_model="gru4rec", session_config=None,
                 merge_hidden: int = 100, train_pnn_batch_norm: bool = True,
                 pnn_fit=None, session_fit=None, pretrained: str = "none", pnn=None, **kwargs):
        super().__init__(num_items, context_codes, context_cardinalities, context_fields, **kwargs)
        self.pnn_config = dict(pnn_config or PAPER_PNN)
        self.session_config = dict(session_config or {})
        self.merge_hidden = int(merge_hidden)
        self.train_pnn_batch_norm = bool(train_pnn_batch_norm)
        self.pnn_fit = dict(pnn_fit or {**ADAGRAD, "epochs": 10})
        self.session_fit = dict(session_fit or {**ADAGRAD, "epochs": 10})
        if pretrained not in self.STAGES:
            raise ValueError(f"pretrained must be one of {self.STAGES}, got {pretrained!r}")
        self.pretrained = pretrained
        if isinstance(pnn, dict):
            pnn = keras.saving.deserialize_keras_object(pnn)
        self.pnn = pnn if pnn is not None else PNN(
            num_items, context_codes, context_cardinalities, context_fields,
            batch_size=self.batch_size, seed=self.seed, **self.pnn_config)
        if not np.array_equal(self.pnn.context_codes, self.context_codes):
            raise ValueError("the given PNN was built for another user context than the ARNN")
        if isinstance(session_model, dict):
            session_model = keras.saving.deserialize_keras_object(session_model)
        if isinstance(session_model, str):
            self.session_name = session_model
            session_model = _build_session_model(session_model, num_items, self.session_config)
        else:
            self.session_name = getattr(session_model, "registry_name", "") or type(session_model).__name__
        if not getattr(session_model, "causal", False):
            raise ValueError(f"the session model {self.session_name!r} must be causal "
                             "(expose encode_sequence -> [B, T, H])")
        self.session = session_model
        self.merge_fc = keras.layers.Dense(self.merge_hidden, activation="relu", name="merge_fc")
        self.merge_bn = keras.layers.BatchNormalization(name="merge_batch_norm")
        self.head = keras.layers.Dense(self.num_items, name="arnn_softmax")
        feats = tuple(getattr(self.session, "input_features", ("items",)))
        self.input_features = tuple(dict.fromkeys(tuple(self.pnn.input_features) + feats))
        self.stage_results: dict = {}
        self._h_cache = None

    @classmethod
    def from_dataset(cls, data: SequenceDataset, context_fields=None, coverage=None,
                     shuffle_context=None, session_model="gru4rec", session_config=None, **config):
        """Builds the ARNN (and its PNN and session model) for ``data``;
        ``shuffle_context=SEED`` gives the shuffled-context ablation."""
        ctx = cls.context_from_dataset(data, context_fields, coverage, shuffle_context)
        if isinstance(session_model, str):
            session_model = _build_session_model(session_model, data, dict(session_config or {}))
        return cls(num_items=data.num_items, context_codes=ctx.codes,
                   context_cardinalities=ctx.cardinalities, context_fields=ctx.fields,
                   session_model=session_model, session_config=session_config, **config)

    # ---------------------------------------------------------- forward
    def merge(self, c, h, training=False):
        """``M([c_t; h_t])`` = FC + ReLU + BN."""
        ch = ops.concatenate([c, ops.cast(h, c.dtype)], axis=-1)
        return apply_flat(lambda v: self.merge_bn(self.merge_fc(v), training=training), ch,
                          self.merge_hidden)

    def _pnn_training(self, training):
        # the frozen PNN only runs in training mode to let its batch norm learn when allowed
        return bool(training) and self.train_pnn_batch_norm

    def encode_events(self, inputs, training=False):
        c = self.pnn.encoder(self.pnn.field_codes(inputs), training=self._pnn_training(training))
        h = inputs["h"]
        if h.shape[-1] is None:  # tf.data leaves dims unknown; the cache fixes H
            h = ops.reshape(h, (-1, self._h_cache.shape[1]))
        return self.merge(c, h, training)

    def encode_sequence(self, inputs, training=False):
        c = self.pnn.encoder(self.pnn.field_codes(inputs), training=self._pnn_training(training))
        sess_in = {k: v for k, v in inputs.items() if k in self.session.input_features}
        h = self.session.encode_sequence(sess_in, training=False)
        return self.merge(c, h, training)

    def decode(self, h, training=False):
        return self.head(h)

    def dummy_inputs(self):
        x = super().dummy_inputs()
        for k in self.input_features:
            if k not in x:
                x[k] = np.zeros((1, 2), np.float32)
        return x

    def build_from_config(self, config):
        x = self.dummy_inputs()
        self.pnn(x)
        self.session({k: v for k, v in x.items() if k in self.session.input_features})
        self(x, training=False)

    # --------------------------------------------------------- training
    def session_hidden_states(self, seqs: SequenceSet, batch_size: int = 64) -> np.ndarray:
        """``h_t`` of the (frozen) session model for every event of ``seqs`` that has
        a next event, each session run from a zero state: float32 ``[num_events, H]``
        (rows of last events stay 0)."""
        import tensorflow as tf

        feats = tuple(self.session.input_features)
        batcher = Batcher(seqs, feats)
        fn = tf.function(lambda x: self.session.encode_sequence(x, training=False), reduce_retracing=True)
        keep = np.flatnonzero(seqs.lengths >= 2)
        keep = keep[np.argsort(seqs.lengths[keep], kind="stable")]
        out = None
        for a in range(0, len(keep), batch_size):
            idx = keep[a : a + batch_size]
            x, _ = batcher.sequence_batch(idx)
            h = ops.convert_to_numpy(fn({k: ops.convert_to_tensor(v) for k, v in x.items() if k in feats}))
            if out is None:
                out = np.zeros((seqs.num_events, h.shape[-1]), np.float32)
            lens = seqs.lengths[idx] - 1
            mask = np.arange(h.shape[1])[None, :] < lens[:, None]
            rows = (seqs.offsets[idx][:, None] + np.arange(h.shape[1])[None, :])[mask]
            out[rows] = h[mask]
        return out if out is not None else np.zeros((seqs.num_events, 1), np.float32)

    def event_features(self, seqs: SequenceSet, events: np.ndarray) -> dict:
        x = super().event_features(seqs, events)
        x["h"] = self._h_cache[events]
        return x

    def freeze_components(self):
        """Freezes the PNN and the session model (the PNN's batch norm stays
        trainable when ``train_pnn_batch_norm``)."""
        self.session.trainable = False
        self.pnn.trainable = False
        if self.train_pnn_batch_norm:
            self.pnn.encoder.batch_norm.trainable = True

    def pretrain(self, data: SequenceDataset, validation_protocol="default", monitor="recall@20",
                 verbose="auto"):
        """Stage 1: trains the PNN and the session model separately (each with its own
        optimizer, validation and best-epoch restore), unless marked ``pretrained``."""
        from tfrec.training.runs import make_optimizer

        stages = []
        if self.pretrained not in ("pnn", "both"):
            stages.append(("pnn", self.pnn, self.pnn_fit))
        if self.pretrained not in ("session", "both"):
            from tfrec.models import registry

            fit = dict(registry.get(self.session_name).fit_config) if self.session_name in registry.names() else {}
            fit.update(self.session_fit)
            stages.append(("session", self.session, fit))
        for name, model, fit in stages:
            model.trainable = True
            with self.distribute_strategy.scope():  # the components live in the ARNN's strategy
                model.compile(optimizer=make_optimizer(fit))
            model.fit(data, epochs=int(fit.get("epochs", 10)), validation_protocol=validation_protocol,
                      monitor=fit.get("monitor", monitor), patience=fit.get("patience"), verbose=verbose)
            self.stage_results[name] = {"best_epoch": model.best_epoch, "valid": model.best_metrics,
                                        "fit_config": fit}
        self.pretrained = "both"

    def fit(self, x=None, y=None, **kwargs):
        if isinstance(x, SequenceDataset):
            self.pretrain(x, kwargs.get("validation_protocol", "default"),
                          kwargs.get("monitor", "recall@20"), kwargs.get("verbose", "auto"))
            self.freeze_components()
            self._h_cache = self.session_hidden_states(x.train)
        return super().fit(x, y, **kwargs)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(pnn_config=self.pnn_config, session_config=self.session_config,
                   session_model=keras.saving.serialize_keras_object(self.session),
                   pnn=keras.saving.serialize_keras_object(self.pnn),
                   merge_hidden=self.merge_hidden, train_pnn_batch_norm=self.train_pnn_batch_norm,
                   pnn_fit=self.pnn_fit, session_fit=self.session_fit, pretrained=self.pretrained)
        return cfg


def train_arnn(data: SequenceDataset, session_model="gru4rec", epochs: Optional[int] = None,
               fit_config: Optional[dict] = None, validation_protocol: str = "default",
               verbose="auto", **config) -> ARNN:
    """Both ARNN stages in one call: pretrain the PNN and the session model, then
    the merge layer.

    Args:
        data: a session dataset with user features (e.g.
            ``session_dataset(movielens_dataset(dir), gap=3600)``).
        session_model: registry name or a (trained; then pass ``pretrained="session"``)
            causal model.
        epochs: merge-stage epochs (default: the registry's).
        fit_config: merge-stage optimizer/patience overrides (default Adagrad).
        **config: :class:`ARNN` config overrides (``pnn_fit``, ``session_fit``,
            ``shuffle_context``, ``merge_hidden``, ...).

    Returns:
        The trained :class:`ARNN` (``model.stage_results`` has the pretraining stages).
    """
    from tfrec.models import registry
    from tfrec.training.runs import make_optimizer

    spec = registry.get("arnn")
    cfg = {**spec.model_config, **config, "session_model": session_model}
    fit = {**spec.fit_config, **(fit_config or {})}
    model = ARNN.from_dataset(data, **cfg)
    model.compile(optimizer=make_optimizer(fit))
    model.fit(data, epochs=int(epochs or fit["epochs"]), validation_protocol=validation_protocol,
              monitor=fit.get("monitor", "recall@20"), patience=fit.get("patience"), verbose=verbose)
    return model
