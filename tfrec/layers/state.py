"""Replica-local per-lane state for stateful training (TBPTT, session-parallel lanes).

Models that carry a recurrent state from one batch to the next (HRNN-meta's TBPTT
lanes, GRU4Rec's session-parallel lanes) keep one state row per *lane*: row ``i``
of every batch continues the stream of row ``i`` of the previous batch. Under a
``tf.distribute`` strategy with ``n`` replicas each global batch of ``B`` lanes is
cut into ``n`` slices of ``B / n`` rows, and a state variable sized for the global
batch no longer fits what a replica sees.

:class:`LaneState` keeps the state in a ``tf.Variable`` created with
``synchronization=ON_READ``. Under a multi-replica strategy that is a
``SyncOnReadVariable``: every replica reads and writes its own copy, shaped for the
*per-replica* batch ``[B / n, *shape_per_lane]``, and no cross-device traffic
happens. Without a strategy (or with one replica) it is a plain variable
``[B, *shape_per_lane]``.

This is correct as long as replica ``r`` receives the same lanes in every batch.
``MirroredStrategy`` with ``experimental_distribute_dataset`` (what Keras ``fit``
uses) cuts each global batch into ``n`` contiguous slices in replica order, so
replica ``r`` owns lanes ``r*B/n .. (r+1)*B/n - 1``;
:func:`tfrec.training.distributed.distribute_batches` gives replica ``r`` the rows
``r::n``, also a fixed set. Global views (:meth:`LaneState.numpy`, reads and
assignments outside ``strategy.run``) concatenate the replica copies in replica
order, i.e. they equal the one-device state for contiguous slicing.

The state is transient training state: it is not tracked as a Keras weight, so it
is left out of ``.keras`` files, ``save_weights``/``BackupAndRestore`` and
``tf.train.Checkpoint`` objects built from the model (a resumed run restarts its
lanes from zero, which TBPTT tolerates, and a model trained under ``n`` replicas
loads on one device unchanged). Only the TensorFlow backend is supported.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

_REGISTRY_ATTR = "_tfrec_lane_states"


class LaneState:
    """One replica-local state tensor per lane.

    Args:
        shape_per_lane: shape of one lane's state, e.g. ``(hidden,)``.
        batch_size: the *global* number of lanes per batch.
        name: variable name.
        dtype: state dtype.
        strategy: the ``tf.distribute`` strategy (default: the current one, so
            create the state inside ``strategy.scope()`` like any model variable).

    Raises:
        ValueError: when ``batch_size`` is not divisible by the number of replicas.

    Attributes:
        variable: the ``tf.Variable`` (a ``SyncOnReadVariable`` under a
            multi-replica strategy).
        num_replicas: replicas in sync when the state was created.
        per_replica_batch_size: lanes per replica, ``batch_size // num_replicas``.

    Inside a replica (``strategy.run``, e.g. a Keras ``train_step``) or without a
    strategy, :meth:`read`/:meth:`assign` see the replica's own
    ``[per_replica_batch_size, *shape_per_lane]`` rows. Elsewhere (cross-replica
    context, or eagerly after ``fit``) they see the global
    ``[batch_size, *shape_per_lane]`` state, replica 0's lanes first.

    Example:

    >>> state = LaneState((3,), batch_size=4, name="carry")
    >>> state.assign(np.ones((4, 3), "float32"))
    >>> h0 = state.initial(np.array([1, 0, 0, 1], "int8"))  # zero where a lane restarts
    >>> h0.numpy()[:, 0].tolist()
    [0.0, 1.0, 1.0, 0.0]
    >>> state.reset(); float(state.numpy().sum())
    0.0
    """

    def __init__(self, shape_per_lane: Sequence[int], batch_size: int, name: str = "lane_state",
                 dtype="float32", strategy=None):
        strategy = strategy or tf.distribute.get_strategy()
        n = int(strategy.num_replicas_in_sync)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size % n:
            raise ValueError(
                f"lane state {name!r}: the global batch of {batch_size} lanes is not divisible by the "
                f"{n} replicas of the distribution strategy; use a multiple of {n} lanes"
            )
        self.name = name
        self.strategy = strategy
        self.num_replicas = n
        self.batch_size = batch_size
        self.per_replica_batch_size = batch_size // n
        self.shape_per_lane = tuple(int(d) for d in shape_per_lane)
        self.dtype = tf.as_dtype(dtype)
        shape = (self.per_replica_batch_size,) + self.shape_per_lane

        def make():
            return tf.Variable(tf.zeros(shape, self.dtype), trainable=False, name=name,
                               synchronization=tf.VariableSynchronization.ON_READ,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

        with tf.init_scope():  # eager creation even when built inside a traced function
            if strategy is tf.distribute.get_strategy():
                self.variable = make()
            else:
                with strategy.scope():
                    self.variable = make()
        self._distributed = isinstance(self.variable, tf.distribute.DistributedValues)

    # ------------------------------------------------------------ contexts
    def in_replica_context(self) -> bool:
        """True when :meth:`read`/:meth:`assign` address one replica's rows: inside
        ``strategy.run`` of the state's strategy, or always for a plain
        (one-replica) state. A model should carry lane state only then: Keras
        also calls models in the cross-replica context (e.g. its symbolic build
        with a per-replica batch), where the global state does not match."""
        if not self._distributed:
            return True
        ctx = tf.distribute.get_replica_context()
        return ctx is not None and ctx.strategy is self.strategy

    def _components(self) -> List[tf.Variable]:
        return list(self.strategy.experimental_local_results(self.variable))

    # ------------------------------------------------------------ access
    def read(self) -> tf.Tensor:
        """The replica's rows inside a replica, the global state elsewhere."""
        if self.in_replica_context():
            return tf.convert_to_tensor(self.variable)
        parts = [tf.convert_to_tensor(c) for c in self._components()]
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)

    def assign(self, value) -> None:
        """Writes the replica's rows inside a replica, every replica's slice of a
        global ``value`` elsewhere."""
        value = tf.cast(value, self.dtype)
        if self.in_replica_context():
            self.variable.assign(value)
            return
        comps = self._components()
        for c, part in zip(comps, tf.split(value, len(comps), axis=0)):
            with tf.device(c.device):
                c.assign(part)

    def initial(self, reset) -> tf.Tensor:
        """The state to start a batch from: :meth:`read`, with zeros in the lanes
        whose ``reset`` flag (``[lanes]``, bool or int) is set."""
        value = self.read()
        reset = tf.cast(tf.reshape(reset, [-1] + [1] * len(self.shape_per_lane)), tf.bool)
        return tf.where(reset, tf.zeros_like(value), value)

    def reset(self) -> None:
        """Zeroes every lane (on every replica when called outside a replica)."""
        if self.in_replica_context():
            self.variable.assign(tf.zeros_like(self.variable))
            return
        for c in self._components():
            with tf.device(c.device):
                c.assign(tf.zeros_like(c))

    def numpy(self) -> np.ndarray:
        """The global state ``[batch_size, *shape_per_lane]`` (replica order)."""
        parts = [c.numpy() for c in self._components()] if self._distributed else [self.variable.numpy()]
        return np.concatenate(parts, axis=0)

    def __repr__(self) -> str:
        return (f"LaneState({self.name!r}, lanes={self.batch_size}, replicas={self.num_replicas}, "
                f"shape_per_lane={self.shape_per_lane})")


def lane_state(layer, shape_per_lane: Sequence[int], name: str, batch_size: int, dtype="float32",
               strategy=None) -> LaneState:
    """Creates a :class:`LaneState` and registers it on ``layer`` (a Keras layer or
    model) without making it a weight: it is listed by :func:`lane_states` but stays
    out of ``layer.weights``, ``.keras`` files and checkpoints.

    Example:

    >>> import keras
    >>> model = keras.Sequential()
    >>> carry = lane_state(model, (8,), "carry", batch_size=4)
    >>> lane_states(model) == [carry], len(model.weights)
    (True, 0)
    """
    state = LaneState(shape_per_lane, batch_size, name=name, dtype=dtype, strategy=strategy)
    # stored in __dict__ directly so neither Keras' nor TensorFlow's tracking sees it
    layer.__dict__.setdefault(_REGISTRY_ATTR, []).append(state)
    return state


def lane_states(layer) -> List[LaneState]:
    """The lane states registered on ``layer`` with :func:`lane_state`."""
    return list(layer.__dict__.get(_REGISTRY_ATTR, []))


def reset_lane_states(layer) -> None:
    """Zeroes every lane state registered on ``layer``."""
    for s in lane_states(layer):
        s.reset()


__all__ = ["LaneState", "lane_state", "lane_states", "reset_lane_states"]
