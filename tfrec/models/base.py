"""The model interface every tfrec recommender implements, and the Keras base class.

A *recommender* scores all items for a history. The evaluator, the CLI, export and
serving rely only on this interface:

* ``input_features`` -- which batch features it reads (``items`` and optionally
  ``deltas``, ``values``, ``user``; see :mod:`tfrec.data.pipelines`).
* ``causal`` -- True when the state at step ``t`` depends only on items ``1..t``;
  such a model also scores every position of a sequence in one pass
  (``score_sequence_batch``) and may train prefix-parallel.
* ``probabilistic`` -- True when scores are logits of a softmax over items (so
  perplexity is defined).
* ``fit(dataset, ...)`` -- trains on a :class:`~tfrec.data.SequenceDataset`.
* ``score_prefix_batch(x) -> [B, num_items]`` -- scores after each history.
* optional, for O(1) serving of recurrent models (SavedModel ``step`` signature):
  ``initial_state(batch_size)`` -> nested tensors ``[B, ...]`` and
  ``step(state, inputs) -> (logits [B, num_items], new_state)`` with ``inputs`` one
  event per row (``items`` ``[B]``, and ``deltas``/``values``/``user`` ``[B]`` when read),
  written with graph-friendly ops. Count baselines implement ``tf_score`` for export.

:class:`SequentialRecommender` is the Keras base (like TFRS's ``Model``): a
subclass implements ``prefix_logits`` (and, if causal, ``encode_sequence`` +
``decode``), and gets ``train_step`` via Keras, masked cross-entropy plus any
``add_loss`` terms (e.g. KL), the data pipeline for its training layout, full-ranking
validation with best-epoch selection, and ``.keras`` saving.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import keras
import numpy as np
from keras import ops

from tfrec.data.pipelines import (
    num_prefix_batches, num_sequence_batches, prefix_batches, sequence_batches, to_tf_dataset,
)
from tfrec.data.schema import SequenceDataset, SequenceSet

LAYOUTS = ("prefix", "sequence")


class Recommender:
    """Interface shared by all tfrec models (neural or not)."""

    input_features: Sequence[str] = ("items",)
    causal: bool = False
    #: longest sequence a causal model scores in one pass during evaluation; longer
    #: splits are scored prefix by prefix (same ranks). ``None``: no limit. Set by
    #: models whose one-pass scoring needs memory quadratic in the length (STAMP).
    sequence_scoring_max_length: "int | None" = None
    probabilistic: bool = False
    #: registry name, set by :func:`tfrec.models.registry.register`.
    registry_name: str = ""
    #: ``None`` when training works with several ``tf.distribute`` replicas; otherwise
    #: the reason it does not (training then refuses a multi-replica strategy).
    replica_support: "str | None" = None

    def score_prefix_batch(self, x: dict) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def score_sequence_batch(self, x: dict) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} is not causal")


class NonNeuralRecommender(Recommender):
    """Base for count-based baselines: configs and state saved as JSON + NPZ."""

    def get_config(self) -> dict:
        return {}

    def state(self) -> dict:
        """Numpy arrays that make up the fitted model."""
        return {}

    def set_state(self, arrays: dict) -> None:
        for k, v in arrays.items():
            setattr(self, k, v)

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "model.json"), "w") as f:
            json.dump({"name": self.registry_name, "config": self.get_config()}, f, indent=2)
        np.savez(os.path.join(directory, "model.npz"), **self.state())

    @classmethod
    def load(cls, directory: str):
        with open(os.path.join(directory, "model.json")) as f:
            meta = json.load(f)
        model = cls(**meta["config"])
        with np.load(os.path.join(directory, "model.npz")) as z:
            model.set_state({k: z[k] for k in z.files})
        return model

    def fit(self, data: SequenceDataset, **kwargs):  # pragma: no cover - interface
        raise NotImplementedError

    def tf_score(self, inputs: dict, state: dict):
        """TensorFlow version of :meth:`score_prefix_batch`, used by SavedModel export.

        Args:
            inputs: dict of tensors like a prefix batch (``items`` int32 ``[B, T]``
                right-padded with 0, and the model's other ``input_features``).
            state: the arrays of :meth:`state` as tensors (same keys).

        Returns:
            float32 scores ``[B, num_items]`` equal to ``score_prefix_batch``.
            Core TensorFlow ops only (the graph must run in TF Serving).
        """
        raise NotImplementedError(f"{type(self).__name__} has no TensorFlow scoring function")


def gather_last(h, lengths):
    """``h[b, lengths[b] - 1]`` for ``h`` of shape ``[B, T, ...]`` (0 for empty rows)."""
    idx = ops.maximum(ops.cast(lengths, "int32") - 1, 0)
    idx = ops.reshape(idx, (-1,) + (1,) * (len(h.shape) - 1))
    return ops.squeeze(ops.take_along_axis(h, idx, axis=1), 1)


def lengths_of(items):
    """Number of non-padding entries per row of right-padded ``items [B, T]``."""
    return ops.sum(ops.cast(ops.not_equal(items, 0), "int32"), axis=1)


def scale_for_replicas(loss):
    """Divides a per-replica mean loss by the number of replicas in sync, so that
    the all-reduced (summed) gradients equal those of the global mean. Keras does
    the same for its built-in losses; custom ``compute_loss`` overrides must too."""
    import tensorflow as tf

    n = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if n == 1 else loss * (1.0 / n)


def masked_sparse_ce(y_true, logits, sample_weight=None, normalizer=None):
    """Mean sparse cross-entropy over entries whose target is not 0.

    Works for ``[B]``/``[B, N]`` and ``[B, T]``/``[B, T, N]``. With ``normalizer``
    the summed cross-entropy is divided by that constant instead of by the batch's
    number of targets (see ``target_normalizer`` of :class:`SequentialRecommender`).
    """
    y_true = ops.cast(y_true, "int32")
    logits = ops.cast(logits, "float32")
    ce = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    w = ops.cast(ops.not_equal(y_true, 0), "float32")
    if sample_weight is not None:
        w = w * ops.cast(sample_weight, "float32")
    if normalizer:
        return ops.sum(ce * w) / float(normalizer)
    return ops.divide_no_nan(ops.sum(ce * w), ops.sum(w))


class _KerasEpoch(keras.callbacks.Callback):
    """Tells the model which Keras epoch is being trained (see
    :meth:`SequentialRecommender.train_epoch`)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.__dict__["_train_epoch"] = int(epoch)


class SequentialRecommender(keras.Model, Recommender):
    """Keras base class of tfrec's neural sequential recommenders.

    Subclasses implement ``prefix_logits(inputs, training)`` -> ``[B, num_items]``
    for right-padded histories; a causal subclass implements instead
    ``encode_sequence(inputs, training) -> [B, T, H]`` and ``decode(h, training)``
    and sets ``causal = True``, which gives it the prefix-parallel training layout.

    Args:
        num_items: number of output classes, padding index 0 included.
        layout: ``"prefix"`` (prefix-augmented samples) or ``"sequence"``
            (prefix-parallel; causal models only).
        batch_size, bucket: training batch size and length bucketing.
        target_normalizer: with ``layout="sequence"``, divide the summed training
            cross-entropy by this constant (e.g. 512) instead of by the batch's
            number of targets. Length-bucketed sequence batches hold very
            different numbers of targets (short sequences: few; long: many); a
            per-batch mean gives each target of a short sequence several times the
            weight of one of a long sequence, whereas a constant weights every
            target equally, as prefix-augmented batches of that size do.
            ``None``: per-batch mean.

    ``fit`` accepts a :class:`~tfrec.data.SequenceDataset` in place of ``x``: it
    builds the training pipeline, validates with full ranking on ``valid`` every
    epoch (``validation_protocol``), restores the best epoch's weights and stores
    ``model.best_epoch`` / ``model.best_metrics``, stops at the first NaN loss
    (``TerminateOnNaN``; NaN scores also count as misses in validation, never as
    hits); ``validation_state`` (a
    directory) makes that bookkeeping survive a restart (used with
    ``BackupAndRestore``). Any other ``x`` goes to Keras unchanged.
    """

    def __init__(self, num_items: int, layout: str = "prefix", batch_size: int = 512,
                 bucket: bool = True, seed: int = 0, target_normalizer: Optional[float] = None,
                 **kwargs):
        super().__init__(**kwargs)
        if num_items < 2:
            raise ValueError(f"num_items must be >= 2 (padding + 1 item), got {num_items}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if layout == "sequence" and not self.causal:
            raise ValueError(
                f"{type(self).__name__} is not causal: prefix-parallel training (layout='sequence') "
                "would change its objective; use layout='prefix'"
            )
        self.num_items = int(num_items)
        self.layout = layout
        self.batch_size = int(batch_size)
        self.bucket = bool(bucket)
        self.seed = int(seed)
        if target_normalizer is not None and float(target_normalizer) <= 0:
            raise ValueError(f"target_normalizer must be > 0 or None, got {target_normalizer!r}")
        self.target_normalizer = None if target_normalizer is None else float(target_normalizer)
        self.best_epoch: Optional[int] = None
        self.best_metrics: dict = {}

    # ------------------------------------------------------------ networks
    def encode_sequence(self, inputs, training=False):  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, h, training=False):  # pragma: no cover - interface
        raise NotImplementedError

    def prefix_logits(self, inputs, training=False):
        """Scores after each (right-padded) history. Default for causal models:
        decode the state at the last real position."""
        h = self.encode_sequence(inputs, training=training)
        return self.decode(gather_last(h, lengths_of(inputs["items"])), training=training)

    def sequence_logits(self, inputs, training=False):
        """Scores after every position ``[B, T, num_items]`` (causal models)."""
        if not self.causal:
            raise NotImplementedError(f"{type(self).__name__} is not causal")
        return self.decode(self.encode_sequence(inputs, training=training), training=training)

    def call(self, inputs, training=False):
        if self.layout == "sequence":
            out = self.sequence_logits(inputs, training=training)
        else:
            out = self.prefix_logits(inputs, training=training)
        # scores and the softmax stay float32 under mixed precision
        return ops.cast(out, "float32")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Masked cross-entropy plus every ``add_loss`` term (e.g. KL), scaled for
        the replicas of a ``tf.distribute`` strategy as Keras' own losses are."""
        normalizer = self.target_normalizer if y is not None and len(y.shape) >= 2 else None
        loss = masked_sparse_ce(y, y_pred, sample_weight, normalizer)
        extra = self.losses
        if extra:
            loss = loss + ops.sum(ops.stack([ops.cast(e, "float32") for e in extra]))
        return scale_for_replicas(loss)

    # ------------------------------------------------------------- scoring
    def _as_inputs(self, x):
        keep = set(self.input_features)
        if "next_deltas" in keep:
            # query-gap models also take the gap from the last event to the query as
            # ``query_deltas`` [B] (seconds), for callers that only have timestamps
            keep.add("query_deltas")
        return {k: ops.convert_to_tensor(v) for k, v in x.items() if k in keep}

    def score_prefix_batch(self, x):
        return ops.convert_to_numpy(self._predict_prefix(self._as_inputs(x)))

    def score_sequence_batch(self, x):
        return ops.convert_to_numpy(self._predict_sequence(self._as_inputs(x)))

    def _compiled(self, method: str):
        """``tf.function`` of ``self.<method>(x, training=False)``, traced once per shape family."""
        cache = self.__dict__.setdefault("_compiled_fns", {})
        if method not in cache:
            import tensorflow as tf

            fn = getattr(self, method)
            cache[method] = tf.function(lambda x: fn(x, training=False), reduce_retracing=True)
        return cache[method]

    def _predict_prefix(self, x):
        return self._compiled("prefix_logits")(x)

    def _predict_sequence(self, x):
        return self._compiled("sequence_logits")(x)

    # ------------------------------------------------------------ training
    def make_dataset(self, seqs: SequenceSet, shuffle: bool = True, batch_size: Optional[int] = None):
        """The ``tf.data`` training pipeline for this model's layout."""
        bs = batch_size or self.batch_size
        feats = tuple(self.input_features)
        if self.layout == "sequence":
            make = lambda e: sequence_batches(seqs, bs, shuffle, self.seed, self.bucket, feats, epoch=e)  # noqa: E731
            n = num_sequence_batches(seqs, bs)
        else:
            make = lambda e: prefix_batches(seqs, bs, shuffle, self.seed, self.bucket, feats, epoch=e)  # noqa: E731
            n = num_prefix_batches(seqs, bs)
        example = next(iter(make(0)))
        return to_tf_dataset(lambda e: make(self.train_epoch(e)), example, num_batches=n)

    def train_epoch(self, passes: int) -> int:
        """The epoch whose shuffle a new pass over the training pipeline uses: during
        :meth:`fit` the Keras epoch being trained (under a strategy Keras opens one
        extra pass to build the model, and a resumed run starts at a later epoch),
        otherwise the number of passes opened so far."""
        return self.__dict__.get("_train_epoch", passes)

    def fit(self, x=None, y=None, *, validation_protocol="default", monitor="recall@20",
            restore_best=True, patience: Optional[int] = None, callbacks=None, verbose="auto",
            validation_state: Optional[str] = None, **kwargs):
        from tfrec.training.distributed import check_keras_fit_strategy

        check_keras_fit_strategy(self.distribute_strategy)
        if not isinstance(x, SequenceDataset):
            return super().fit(x, y, callbacks=callbacks, verbose=verbose, **kwargs)
        from tfrec.training.callbacks import RankingValidation

        data = x
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas > 1 and self.replica_support:
            raise ValueError(f"{type(self).__name__} cannot train with {replicas} replicas yet: "
                             f"{self.replica_support}; train it without a distribution strategy")
        if data.num_items != self.num_items:
            raise ValueError(
                f"dataset has {data.num_items} item classes but the model was built for {self.num_items}"
            )
        callbacks = [_KerasEpoch()] + list(callbacks or [])
        if not any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks):
            # a diverged run stops at once; the best finite epoch's weights are restored
            callbacks.append(keras.callbacks.TerminateOnNaN())
        val = None
        if len(data.valid) and data.valid.num_targets:
            val = RankingValidation(data.valid, protocol=validation_protocol, monitor=monitor,
                                    patience=patience, restore_best=restore_best,
                                    verbose=0 if verbose == 0 else 1, state_dir=validation_state)
            callbacks.insert(0, val)  # val_* logs must exist before EarlyStopping etc. read them
        kwargs.pop("shuffle", None)  # the pipeline shuffles per epoch itself
        train_ds = self.make_dataset(data.train)
        if not self.built:  # BackupAndRestore and checkpoints need built weights
            x0 = next(iter(train_ds))[0]
            with self.distribute_strategy.scope():
                self(x0)
        try:
            hist = super().fit(train_ds, callbacks=callbacks, verbose=verbose, shuffle=False, **kwargs)
        finally:
            self.__dict__.pop("_train_epoch", None)
        if val is not None:
            self.best_epoch, self.best_metrics = val.best_epoch, val.best_metrics
            # every validated epoch, also those of earlier runs resumed from ``validation_state``
            self.validation_history = list(val.history)
        return hist

    def get_config(self):
        return {"num_items": self.num_items, "layout": self.layout, "batch_size": self.batch_size,
                "bucket": self.bucket, "seed": self.seed, "target_normalizer": self.target_normalizer}
