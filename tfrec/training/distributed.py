"""Distributed training: strategies by name, and a multi-worker training loop.

Keras 3 ``fit`` works with ``tf.distribute.MirroredStrategy`` (one machine, several
devices): build and compile the model inside ``strategy.scope()`` and call ``fit``
(:func:`tfrec.training.runs.train` does this for ``strategy="mirrored"``).

Keras 3 ``fit`` does not support ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585). :func:`fit_distributed` runs the model's own
``train_step`` under ``strategy.run`` over a distributed dataset instead, with
checkpoints (resume after a restart) and Keras callbacks. Workers find each other
through ``TF_CONFIG``, e.g. for two workers on one host::

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]},
                "task": {"type": "worker", "index": 0}}'

Every global batch is cut into one slice per replica (rows ``r::num_replicas``),
so N workers with a global batch of B do exactly the work of one worker with B.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, Iterator, Optional

import keras
import numpy as np
import tensorflow as tf

from tfrec.data.pipelines import generator_options

STRATEGIES = ("default", "mirrored", "multi_worker")


def get_strategy(name: str = "default", devices: Optional[int] = None):
    """A ``tf.distribute`` strategy by name.

    Args:
        name: ``default`` (no distribution), ``mirrored`` (all local GPUs, or the
            local CPU devices when there is no GPU) or ``multi_worker``
            (``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``).
        devices: for ``mirrored``, how many local devices to use; an error if the
            machine has fewer.

    Raises:
        ValueError: unknown name, or a strategy the machine cannot provide.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        pool = gpus or tf.config.list_logical_devices("CPU")
        if devices is not None:
            if devices > len(pool):
                kind = "GPU" if gpus else "CPU"
                raise ValueError(
                    f"strategy 'mirrored' with {devices} devices needs {devices} {kind} devices; "
                    f"this machine has {len(pool)} (for CPU tests, split the CPU with "
                    "tf.config.set_logical_device_configuration before TensorFlow starts)"
                )
            pool = pool[:devices]
        return tf.distribute.MirroredStrategy([d.name for d in pool])
    cfg = os.environ.get("TF_CONFIG")
    if not cfg:
        raise ValueError("strategy 'multi_worker' needs TF_CONFIG describing the cluster and this task")
    try:
        json.loads(cfg)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    t, i = resolver.task_type, resolver.task_id
    return t == "chief" or (t == "worker" and i == 0 and "chief" not in resolver.cluster_spec().as_dict())


def num_workers(strategy) -> int:
    """Worker processes (chief included) of ``strategy``'s cluster; 1 without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return max(1, sum(len(spec.get(job, [])) for job in ("chief", "worker")))


#: why Keras 3 ``fit`` is refused under a multi-worker strategy
MULTI_WORKER_FIT_ERROR = (
    "Keras 3's fit does not run under MultiWorkerMirroredStrategy with several workers "
    "(keras-team/keras#20585); train with tfrec.training.distributed.fit_distributed, "
    "which runs the model's train_step under strategy.run")


def check_keras_fit_strategy(strategy) -> None:
    """Raises ``ValueError(MULTI_WORKER_FIT_ERROR)`` for a multi-worker strategy (Keras 3
    ``fit`` fails there with an unrelated type error); a single worker passes."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and num_workers(strategy) > 1:
        raise ValueError(MULTI_WORKER_FIT_ERROR)


def _slice_rows(batch, start: int, step: int):
    return tf.nest.map_structure(lambda a: np.asarray(a)[start::step], batch)


def distribute_batches(strategy, make_batches: Callable[[int], Iterator], example):
    """A distributed dataset from a per-epoch generator of *global* batches.

    ``make_batches(epoch)`` yields global ``(x, y)`` batches; each replica gets the
    rows ``r::num_replicas`` of every batch (batches with fewer rows than replicas
    are skipped so that every replica sees the same number of steps).
    """
    n_rep = strategy.num_replicas_in_sync

    def spec(a):
        a = np.asarray(a)
        return tf.TensorSpec(shape=(None,) * a.ndim, dtype=tf.as_dtype(a.dtype))

    signature = tf.nest.map_structure(spec, example)

    def dataset_fn(ctx: tf.distribute.InputContext):
        per_pipeline = n_rep // ctx.num_input_pipelines
        counter = {"epoch": 0}

        def gen():
            epoch = counter["epoch"]
            counter["epoch"] += 1
            for batch in make_batches(epoch):
                rows = len(np.asarray(tf.nest.flatten(batch)[-1]))
                if rows < n_rep:
                    continue
                for r in range(per_pipeline):
                    yield _slice_rows(batch, ctx.input_pipeline_id * per_pipeline + r, n_rep)

        ds = tf.data.Dataset.from_generator(gen, output_signature=signature)
        opts = generator_options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(opts).prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn)


def fit_distributed(model, make_batches: Callable[[int], Iterator], epochs: int, strategy=None,
                    checkpoint_dir: Optional[str] = None, callbacks=None, verbose: int = 1) -> dict:
    """Trains ``model`` with its own ``train_step`` under ``strategy.run``.

    Args:
        model: a compiled Keras model created inside ``strategy.scope()`` (tfrec
            models or any Keras model whose ``train_step`` takes ``(x, y)``).
        make_batches: ``epoch -> iterator of global (x, y) numpy batches``, e.g.
            ``lambda e: prefix_batches(data.train, 512, shuffle=True, epoch=e)``.
        epochs: total number of epochs (a resumed run continues up to it).
        strategy: a ``tf.distribute`` strategy (default: the current one).
        checkpoint_dir: where the chief keeps the latest checkpoint (model,
            optimizer, finished epochs); an existing checkpoint is restored first, so
            a killed job resumes at the epoch boundary where it stopped.
        callbacks: Keras callbacks (``on_epoch_end`` sees ``loss``; setting
            ``model.stop_training`` stops).

    Returns:
        ``{"loss": [...per epoch...], "initial_epoch": e}``.

    Example:

    >>> strategy = get_strategy("multi_worker")  # doctest: +SKIP
    >>> with strategy.scope():  # doctest: +SKIP
    ...     model = tfrec.models.build("gru4rec_ce", data); model.compile(optimizer="adam")
    >>> fit_distributed(model, lambda e: prefix_batches(data.train, 512, True, epoch=e),
    ...                 epochs=10, strategy=strategy, checkpoint_dir="ckpt")  # doctest: +SKIP
    """
    strategy = strategy or tf.distribute.get_strategy()
    example = next(iter(make_batches(0)))
    with strategy.scope():
        # build weights and optimizer slots outside replica context
        model(tf.nest.map_structure(tf.convert_to_tensor, example[0]))
        model.optimizer.build(model.trainable_variables)
        done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=done)
    manager = None
    if checkpoint_dir:
        chief = is_chief(strategy)
        target = checkpoint_dir if chief else tempfile.mkdtemp(prefix="tfrec_worker_ckpt_")
        manager = tf.train.CheckpointManager(ckpt, target, max_to_keep=1)
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest:
            ckpt.restore(latest)
    dist = distribute_batches(strategy, make_batches, example)

    @tf.function
    def step(batch):
        logs = strategy.run(model.train_step, args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, logs["loss"], axis=None)

    cbs = keras.callbacks.CallbackList(list(callbacks or []), model=model)
    history = {"loss": [], "initial_epoch": int(done.numpy())}
    model.stop_training = False
    cbs.on_train_begin()
    for epoch in range(int(done.numpy()), epochs):
        cbs.on_epoch_begin(epoch)
        for m in model.metrics:
            m.reset_state()
        losses = [float(step(batch)) for batch in dist]
        logs = {"loss": float(np.mean(losses)) if losses else float("nan")}
        done.assign(epoch + 1)
        if manager is not None:
            manager.save()
        cbs.on_epoch_end(epoch, logs)
        history["loss"].append(logs["loss"])
        if verbose and is_chief(strategy):
            print(f"epoch {epoch + 1}/{epochs} loss {logs['loss']:.4f} ({len(losses)} steps)", flush=True)
        if model.stop_training:
            break
    cbs.on_train_end()
    return history
