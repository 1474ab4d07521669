"""LaneState: replica-local per-lane state (tfrec.layers.state).

The multi-replica checks run in a subprocess (this file run as a script): the
CPU must be split into 2 logical devices before TensorFlow starts.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.abspath(__file__)


# ------------------------------------------------------------------ one device
def test_one_device_lane_state_is_a_plain_variable(tmp_path):
    import keras
    import tensorflow as tf

    from tfrec.layers import LaneState, lane_state, lane_states, reset_lane_states

    s = LaneState((3,), batch_size=4, name="carry")
    assert not isinstance(s.variable, tf.distribute.DistributedValues)
    assert s.num_replicas == 1 and s.per_replica_batch_size == 4 and tuple(s.variable.shape) == (4, 3)
    value = np.arange(12, dtype=np.float32).reshape(4, 3)
    s.assign(value)
    np.testing.assert_array_equal(s.numpy(), value)
    np.testing.assert_array_equal(s.read().numpy(), value)
    # inside a traced function (as in a Keras train step) the same rows are read and written
    step = tf.function(lambda reset: (s.initial(reset), s.assign(s.read() + 1.0))[0])
    h0 = step(tf.constant([0, 1, 0, 0], tf.int8)).numpy()
    np.testing.assert_array_equal(h0, np.where([[False], [True], [False], [False]], 0.0, value))
    np.testing.assert_array_equal(s.numpy(), value + 1.0)
    # a mirrored strategy with one device behaves the same
    one = tf.distribute.MirroredStrategy(["/cpu:0"])
    with one.scope():
        m = LaneState((3,), batch_size=4, name="carry_1")
    assert m.per_replica_batch_size == 4
    m.assign(value)
    np.testing.assert_array_equal(one.run(lambda: m.read()).numpy(), value)
    one.run(lambda: m.assign(m.read() * 2.0))
    np.testing.assert_array_equal(m.numpy(), value * 2.0)
    # registered on a model, not a weight: left out of .keras files and weights
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    n_weights = len(model.weights)
    carry = lane_state(model, (5,), "carry", batch_size=2)
    carry.assign(np.ones((2, 5), np.float32))
    assert lane_states(model) == [carry] and len(model.weights) == n_weights
    model.save(tmp_path / "m.keras")
    assert len(keras.saving.load_model(tmp_path / "m.keras").weights) == n_weights
    reset_lane_states(model)
    assert carry.numpy().sum() == 0.0


# ------------------------------------------------------------ two replicas
def _child():
    """Runs in a subprocess with 2 logical CPU devices; prints one JSON line."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfrec.layers import LaneState

    out = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    try:
        with strategy.scope():
            LaneState((3,), batch_size=3, name="odd")
    except ValueError as e:
        out["odd_error"] = str(e)
    with strategy.scope():
        s = LaneState((2,), batch_size=4, name="carry")
    out["distributed"] = isinstance(s.variable, tf.distribute.DistributedValues)
    out["per_replica_shape"] = [list(c.shape) for c in strategy.experimental_local_results(s.variable)]

    def local(x):
        return strategy.experimental_local_results(x)

    # each replica writes its own id; each reads back only its own value
    def write_id():
        rid = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32)
        s.assign(tf.fill([2, 2], rid + 10.0))

    strategy.run(tf.function(write_id))
    out["read_after_write"] = [v.numpy().tolist() for v in local(strategy.run(tf.function(s.read)))]
    out["global_after_write"] = s.numpy().tolist()
    # a global assignment from outside the replicas lands split in replica order
    s.assign(np.arange(8, dtype=np.float32).reshape(4, 2))
    out["read_after_global_assign"] = [v.numpy().tolist() for v in local(strategy.run(s.read))]
    with strategy.scope():  # cross-replica context
        out["cross_replica_read"] = s.read().numpy().tolist()
    # a distributed dataset of batches with unknown batch size (as tfrec pipelines
    # are) gives each replica the same lanes in every batch: row i holds lane i
    lanes = LaneState((1,), batch_size=4, name="lanes", strategy=strategy)

    def gen():
        for step in range(3):
            yield {"lane": np.arange(4, dtype=np.float32)[:, None], "step": np.full((4, 1), step, np.float32)}

    sig = {k: tf.TensorSpec((None, 1), tf.float32) for k in ("lane", "step")}
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_generator(gen, output_signature=sig))

    @tf.function
    def carry_step(x):
        def fn(x):
            prev = lanes.read()
            lanes.assign(x["lane"] * 100.0 + x["step"])
            return tf.concat([prev, x["lane"]], 1)

        return strategy.run(fn, args=(x,))

    seen = []
    for x in ds:
        seen.append([v.numpy().tolist() for v in local(carry_step(x))])
    out["seen"] = seen
    out["lanes_final"] = lanes.numpy()[:, 0].tolist()
    lanes.reset()
    out["after_reset"] = float(np.abs(lanes.numpy()).sum())
    print("RESULT " + json.dumps(out), flush=True)


@pytest.fixture(scope="module")
def two_replicas():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run([sys.executable, HERE], capture_output=True, text=True, env=env, timeout=300)
    rows = [line[7:] for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert rows, p.stderr[-3000:]
    return json.loads(rows[0])


def test_lane_state_needs_a_batch_divisible_by_the_replicas(two_replicas):
    assert "not divisible by the 2 replicas" in two_replicas["odd_error"]


def test_replicas_keep_separate_per_replica_rows(two_replicas):
    r = two_replicas
    assert r["distributed"] and r["per_replica_shape"] == [[2, 2], [2, 2]]
    assert r["read_after_write"] == [[[10.0, 10.0]] * 2, [[11.0, 11.0]] * 2]
    assert r["global_after_write"] == [[10.0, 10.0]] * 2 + [[11.0, 11.0]] * 2
    assert r["read_after_global_assign"] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    assert r["cross_replica_read"] == np.arange(8).reshape(4, 2).tolist()


def test_distributed_batches_keep_lanes_on_their_replica(two_replicas):
    r = two_replicas
    assert len(r["seen"]) == 3
    for step, (rep0, rep1) in enumerate(r["seen"]):
        # contiguous slices in replica order: replica 0 owns lanes 0-1, replica 1 lanes 2-3 ...
        assert [row[1] for row in rep0] == [0.0, 1.0] and [row[1] for row in rep1] == [2.0, 3.0]
        # ... and reads back what it wrote for the same lanes one step earlier
        prev = [0.0] * 4 if step == 0 else [lane * 100.0 + step - 1 for lane in range(4)]
        assert [row[0] for row in rep0 + rep1] == prev
    assert r["lanes_final"] == [0.0 * 100 + 2, 102.0, 202.0, 302.0]
    assert r["after_reset"] == 0.0


if __name__ == "__main__":
    _child()
