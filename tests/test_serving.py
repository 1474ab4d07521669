"""The TF-Serving-compatible server, driven with the official gRPC stubs and plain HTTP."""

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
    model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tfrec.data import simulate_sessions
from tfrec.models.baselines import Pop, SPop
from tfrec.savedmodels import export
from tfrec.serving import BatchingOptions, Client, ModelConfig, ModelServer


@pytest.fixture(scope="module")
def data():
    return simulate_sessions(num_users=200, seed=0)


@pytest.fixture(scope="module")
def models(data):
    return {"spop": SPop(data.num_items).fit(data), "pop": Pop(data.num_items).fit(data)}


@pytest.fixture(scope="module")
def base(models, data, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    export(models["spop"], str(root / "spop"), data=data)
    return root


@pytest.fixture(scope="module")
def server(base):
    srv = ModelServer.from_base_path("rec", str(base / "spop"), file_system_poll_wait_seconds=0)
    srv.start(port=0, rest_api_port=0)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stubs(server):
    ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield (prediction_service_pb2_grpc.PredictionServiceStub(ch), model_service_pb2_grpc.ModelServiceStub(ch))
    ch.close()


def request(name="rec", signature="", version=None, **inputs):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if signature:
        req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return req


def good_inputs(k=3):
    return dict(items=np.array([[b"1", b"2", b""], [b"3", b"", b""]], object), lengths=np.array([2, 1], np.int32),
                k=np.array([k, k], np.int32), exclude_seen=np.array([True, False]))


def http(server, path, body=None):
    url = f"http://127.0.0.1:{server.rest_api_port}{path}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ----------------------------------------------------------------------------- gRPC
def test_grpc_metadata_and_status(server, stubs):
    pred, msvc = stubs
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "rec"
    req.metadata_field.append("signature_def")
    resp = pred.GetModelMetadata(req, timeout=10)
    assert resp.model_spec.version.value == 1
    sdm = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sdm)
    sd = sdm.signature_def["serving_default"]
    assert set(sd.inputs) == {"items", "lengths", "k", "exclude_seen"}
    assert set(sd.outputs) == {"item_ids", "scores"}
    assert {"score", "step", "initial_state", "recommend_ragged"} <= set(sdm.signature_def)
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "rec"
    st = msvc.GetModelStatus(sreq, timeout=10).model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in st] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]


def test_grpc_predict_equals_in_process_savedmodel(server, stubs, base):
    pred, _ = stubs
    inputs = good_inputs()
    resp = pred.Predict(request(**inputs), timeout=10)
    assert resp.model_spec.name == "rec" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    got = {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}
    loaded = tf.saved_model.load(str(base / "spop" / "1"))
    want = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})
    np.testing.assert_array_equal(got["item_ids"], want["item_ids"].numpy())
    np.testing.assert_allclose(got["scores"], want["scores"].numpy())
    assert b"1" not in got["item_ids"][0] and b"2" not in got["item_ids"][0]  # exclude_seen
    # explicit version, other signature, output_filter
    r = request(signature="score", version=1, items=inputs["items"], lengths=inputs["lengths"],
                candidates=np.array([[b"1", b"5"], [b"3", b"4"]], object))
    r.output_filter.append("scores")
    out = tf.make_ndarray(pred.Predict(r, timeout=10).outputs["scores"])
    assert out.shape == (2, 2)


@pytest.mark.parametrize("case, code, fragment", [
    ("unknown_model", "NOT_FOUND", "nomodel"),
    ("unknown_version", "NOT_FOUND", "99"),
    ("unknown_signature", "NOT_FOUND", "nosig"),
    ("missing_input", "INVALID_ARGUMENT", "missing input"),
    ("extra_input", "INVALID_ARGUMENT", "unknown input"),
    ("wrong_dtype", "INVALID_ARGUMENT", "expects int32"),
    ("wrong_shape", "INVALID_ARGUMENT", "expects shape"),
    ("k_too_large", "INVALID_ARGUMENT", "k must be <="),
    ("k_zero", "INVALID_ARGUMENT", "k must be >= 1"),
    ("lengths_too_long", "INVALID_ARGUMENT", "lengths"),
    ("lengths_rows", "INVALID_ARGUMENT", "lengths"),
    ("bad_output_filter", "INVALID_ARGUMENT", "nope"),
])
def test_grpc_bad_requests(server, stubs, case, code, fragment):
    pred, _ = stubs
    x = good_inputs()
    kw = {}
    if case == "unknown_model":
        kw["name"] = "nomodel"
    elif case == "unknown_version":
        kw["version"] = 99
    elif case == "unknown_signature":
        kw["signature"] = "nosig"
    elif case == "missing_input":
        x.pop("k")
    elif case == "extra_input":
        x["extra"] = np.zeros(2, np.float32)
    elif case == "wrong_dtype":
        x["k"] = np.array([3.0, 3.0], np.float32)
    elif case == "wrong_shape":
        x["lengths"] = np.array([[2, 1]], np.int32)
    elif case == "k_too_large":
        x["k"] = np.array([3, 10**6], np.int32)
    elif case == "k_zero":
        x["k"] = np.array([0, 3], np.int32)
    elif case == "lengths_too_long":
        x["lengths"] = np.array([4, 1], np.int32)
    elif case == "lengths_rows":
        x["lengths"] = np.array([1], np.int32)
    req = request(**kw, **x)
    if case == "bad_output_filter":
        req.output_filter.append("nope")
    with pytest.raises(grpc.RpcError) as err:
        pred.Predict(req, timeout=10)
    assert err.value.code() == getattr(grpc.StatusCode, code), err.value.details()
    assert fragment in err.value.details()
    # the server keeps serving
    assert pred.Predict(request(**good_inputs()), timeout=10).outputs["item_ids"]


def test_grpc_unimplemented_and_metadata_errors(stubs):
    pred, msvc = stubs
    creq = classification_pb2.ClassificationRequest()
    creq.model_spec.name = "rec"
    with pytest.raises(grpc.RpcError) as err:
        pred.Classify(creq, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "rec"
    req.metadata_field.append("bogus")
    with pytest.raises(grpc.RpcError) as err:
        pred.GetModelMetadata(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "nomodel"
    with pytest.raises(grpc.RpcError) as err:
        msvc.GetModelStatus(sreq, timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_client_helper(server):
    with Client(f"127.0.0.1:{server.port}", "rec") as c:
        recs = c.recommend([["1", "2"], ["3"]], k=3, exclude_seen=True)
        assert len(recs) == 2 and len(recs[0]) == 3 and all(i not in ("1", "2") for i, _ in recs[0])
        assert "serving_default" in c.metadata()
        assert c.status()[0]["state"] == "AVAILABLE"
        # numpy inputs (fast encoding) and Python lists (tf.make_tensor_proto: [3] is int32)
        # give what the in-process call gives
        inp = good_inputs()
        _, want = server.predict("rec", inp)
        for sent in (inp, {k: v.tolist() for k, v in inp.items()}):
            got = c.predict(sent)
            assert set(got) == set(want)
            for k in want:
                assert got[k].dtype == want[k].dtype
                np.testing.assert_array_equal(got[k], want[k])
        with pytest.raises(grpc.RpcError) as e:  # errors are unchanged
            c.predict(dict(inp, k=inp["k"].astype(np.int64)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "expects int32" in e.value.details()


def test_binds_loopback_by_default(server):
    assert server.http_server.server_address[0] == "127.0.0.1"
    import inspect

    assert inspect.signature(ModelServer.start).parameters["host"].default == "127.0.0.1"


# ----------------------------------------------------------------------------- REST
def test_rest_status_metadata_predict(server, base):
    code, st = http(server, "/v1/models/rec")
    assert code == 200 and st["model_version_status"][0]["state"] == "AVAILABLE"
    code, st = http(server, "/v1/models/rec/versions/1")
    assert code == 200 and st["model_version_status"][0]["version"] == "1"
    code, md = http(server, "/v1/models/rec/metadata")
    assert code == 200 and md["model_spec"]["version"] == "1"
    assert "serving_default" in md["metadata"]["signature_def"]["signature_def"]
    row = {"instances": [{"items": ["1", "2"], "lengths": 2, "k": 3, "exclude_seen": True},
                         {"items": ["3", ""], "lengths": 1, "k": 3, "exclude_seen": False}]}
    code, out = http(server, "/v1/models/rec:predict", row)
    assert code == 200, out
    loaded = tf.saved_model.load(str(base / "spop" / "1"))
    want = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in good_inputs().items()})
    assert [p["item_ids"] for p in out["predictions"]] == [[i.decode() for i in r] for r in want["item_ids"].numpy()]
    np.testing.assert_allclose([p["scores"] for p in out["predictions"]], want["scores"].numpy(), rtol=1e-6)
    col = {"signature_name": "serving_default",
           "inputs": {"items": [[{"b64": "MQ=="}, "2"], ["3", ""]], "lengths": [2, 1], "k": [3, 3],
                      "exclude_seen": [True, False]}}
    code, out2 = http(server, "/v1/models/rec/versions/1:predict", col)
    assert code == 200, out2
    assert out2["outputs"]["item_ids"] == [p["item_ids"] for p in out["predictions"]]


@pytest.mark.parametrize("path, body, status, fragment", [
    ("/v1/models/nomodel:predict", {"instances": [1]}, 404, "nomodel"),
    ("/v1/models/rec/versions/9:predict", {"instances": [1]}, 404, "9"),
    ("/v1/models/rec:predict", b"{not json", 400, "JSON"),
    ("/v1/models/rec:predict", {"instances": [{"items": ["1"], "lengths": 1, "k": 3}]}, 400, "exclude_seen"),
    ("/v1/models/rec:predict", {"inputs": {"items": [["1"]], "lengths": [1], "k": ["x"],
                                           "exclude_seen": [False]}}, 400, "'k'"),
    ("/v1/models/rec:predict", {"inputs": {"items": [["1"]], "lengths": [1], "k": [1.5],
                                           "exclude_seen": [False]}}, 400, "'k'"),
    ("/v1/models/rec:predict", {"inputs": {"items": [["1"]], "lengths": [1], "k": [100000],
                                           "exclude_seen": [False]}}, 400, "k must be"),
    ("/v1/models/rec:predict", {"inputs": {"items": [["1", "2"], ["1"]], "lengths": [1, 1], "k": [1, 1],
                                           "exclude_seen": [False, False]}}, 400, "ragged"),
    ("/v1/models/rec:predict", {"instances": [], "inputs": {}}, 400, "exactly one"),
    ("/v1/models/rec:predict", {"signature_name": "nosig", "instances": [1]}, 404, "nosig"),
    ("/v1/models/rec:classify", {"examples": []}, 501, "classify"),
    ("/v2/whatever", None, 404, "Malformed"),
])
def test_rest_errors(server, path, body, status, fragment):
    code, out = http(server, path, body)
    assert code == status, out
    assert fragment in out["error"]
    assert http(server, "/v1/models/rec")[0] == 200


# ------------------------------------------------------------------ versions and load
@pytest.mark.parametrize("batching", [False, True])
def test_version_swap_under_load_and_corrupt_version(models, data, tmp_path, batching):
    base = tmp_path / "rec"
    export(models["spop"], str(base), data=data)  # version 1
    srv = ModelServer.from_base_path("rec", str(base), file_system_poll_wait_seconds=0.2,
                                     enable_batching=batching,
                                     batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=2000))
    srv.start(port=0, rest_api_port=None)
    stop = threading.Event()
    errors, versions, count = [], set(), [0]
    lock = threading.Lock()

    def worker():
        ch = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        while not stop.is_set():
            try:
                r = stub.Predict(request(**good_inputs()), timeout=30)
                with lock:
                    versions.add(r.model_spec.version.value)
                    count[0] += 1
            except grpc.RpcError as e:  # every failure counts
                with lock:
                    errors.append(f"{e.code()}: {e.details()}")
        ch.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        export(models["pop"], str(base), data=data)  # version 2 appears while requests are in flight
        deadline = time.time() + 60
        while 2 not in versions and time.time() < deadline:
            time.sleep(0.1)
        assert 2 in versions, "version 2 was never served"
        # a corrupt version 3: logged, reported, skipped; version 2 keeps serving
        bad = base / "3"
        shutil.copytree(base / "2", bad)
        with open(bad / "saved_model.pb", "wb") as f:
            f.write(b"this is not a SavedModel")
        deadline = time.time() + 30
        while srv.status("rec").get(3, {}).get("state") != "END" and time.time() < deadline:
            time.sleep(0.1)
        n_before = count[0]
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    try:
        assert errors == [], errors[:5]
        assert count[0] > n_before, "requests stopped succeeding after the corrupt version"
        st = srv.status("rec")
        assert st[3]["state"] == "END" and st[3]["error_code"] != "OK" and "3" in st[3]["error_message"]
        assert st[2]["state"] == "AVAILABLE" and st[1]["state"] == "END"
        sreq = get_model_status_pb2.GetModelStatusRequest()
        sreq.model_spec.name = "rec"
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            resp = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(sreq, timeout=10)
            last = pred_stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            assert pred_stub.Predict(request(**good_inputs()), timeout=10).model_spec.version.value == 2
        codes = {s.version: s.status.error_code for s in resp.model_version_status}
        assert codes[3] != 0 and codes[2] == 0
        assert last is not None
    finally:
        srv.stop()


def test_batching_merges_concurrent_requests(models, data, tmp_path):
    base = tmp_path / "b"
    export(models["spop"], str(base), data=data)
    opts = BatchingOptions(max_batch_size=16, batch_timeout_micros=200_000, num_batch_threads=1,
                           pad_variable_length_inputs=True)
    srv = ModelServer.from_base_path("rec", str(base), enable_batching=True, batching=opts,
                                     file_system_poll_wait_seconds=0)
    sv = srv.model("rec").resolve()
    calls = []
    orig = sv.scheduler.run

    def counting(sig, inputs):
        calls.append(len(inputs["lengths"]) if "lengths" in inputs else -1)
        return orig(sig, inputs)

    sv.scheduler.run = counting
    plain = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    rng = np.random.default_rng(0)
    reqs = []
    for i in range(6):
        L = int(rng.integers(1, 5))
        items = np.array([[str(x).encode() for x in rng.integers(1, data.num_items, L)]], object)
        reqs.append(dict(items=items, lengths=np.array([L], np.int32), k=np.array([4], np.int32),
                         exclude_seen=np.array([bool(i % 2)])))
    results = [None] * len(reqs)

    def go(i):
        results[i] = srv.predict("rec", reqs[i])[1]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert max(calls) > 1, f"no batch formed: {calls}"
        for r, x in zip(results, reqs):
            want = plain(**{k: tf.constant(v) for k, v in x.items()})
            np.testing.assert_array_equal(r["item_ids"], want["item_ids"].numpy())
            np.testing.assert_allclose(r["scores"], want["scores"].numpy(), rtol=1e-6)
        # a bad request inside a batch fails alone
        bad = dict(reqs[0], k=np.array([10**6], np.int32))
        out = [None, None]

        def run(i, x):
            try:
                out[i] = srv.predict("rec", x)[1]
            except Exception as e:  # noqa: BLE001
                out[i] = e

        ts = [threading.Thread(target=run, args=(0, bad)), threading.Thread(target=run, args=(1, reqs[1]))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert getattr(out[0], "code", None) == "INVALID_ARGUMENT" and isinstance(out[1], dict)
    finally:
        srv.stop()


def test_model_config_list_labels_and_reload(models, data, tmp_path):
    for name in ("spop", "pop"):
        export(models[name], str(tmp_path / name), data=data)
        export(models[name], str(tmp_path / name), data=data)
    cfg = tmp_path / "models.config"
    cfg.write_text(f"""
model_config_list {{
  config {{ name: "spop" base_path: "{tmp_path / 'spop'}" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }} version_labels {{ key: "stable" value: 1 }} }}
  config {{ name: "pop" base_path: "{tmp_path / 'pop'}" model_platform: "tensorflow" }}
}}
""")
    srv = ModelServer.from_config_file(str(cfg), file_system_poll_wait_seconds=0)
    srv.start(port=0, rest_api_port=0)
    try:
        assert sorted(srv.models) == ["pop", "spop"]
        assert sorted(srv.model("spop").servables) == [1, 2]  # policy all
        assert sorted(srv.model("pop").servables) == [2]  # latest
        code, out = http(srv, "/v1/models/spop/labels/stable:predict",
                         {"instances": [{"items": ["1"], "lengths": 1, "k": 2, "exclude_seen": False}]})
        assert code == 200, out
        assert http(srv, "/v1/models/spop/labels/nolabel:predict", {"instances": [1]})[0] == 404
        # HandleReloadConfigRequest: keep only "pop"
        new = model_server_config_pb2.ModelServerConfig()
        c = new.model_config_list.config.add()
        c.name, c.base_path, c.model_platform = "pop", str(tmp_path / "pop"), "tensorflow"
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            resp = model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=new), timeout=60)
            assert resp.status.error_code == 0
            with pytest.raises(grpc.RpcError) as err:
                prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request(name="spop", **good_inputs()))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        srv.stop()


def test_message_size_limit(models, data, tmp_path):
    export(models["spop"], str(tmp_path / "m"), data=data)
    srv = ModelServer([ModelConfig("rec", str(tmp_path / "m"))], max_message_bytes=2000,
                      file_system_poll_wait_seconds=0).start(port=0, rest_api_port=None)
    try:
        big = dict(good_inputs(), items=np.full((2, 400), b"1", object), lengths=np.array([400, 400], np.int32))
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(request(**big), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.Predict(request(**good_inputs()), timeout=10).outputs["item_ids"]
    finally:
        srv.stop()


def test_quickstart_export_and_serve(models, data, tmp_path, capsys):
    from tfrec.savedmodels import quickstart_export_and_serve

    res = quickstart_export_and_serve(models["pop"], data, str(tmp_path), k=3)
    assert os.path.isdir(res["export_dir"]) and res["grpc_port"] > 0
    want = np.argsort(-models["pop"].counts[1:], kind="stable")[:3] + 1
    assert [i for i, _ in res["recommendations"]] == data.item_vocab.ids(want)
    assert "served over gRPC" in capsys.readouterr().out


def test_quickstart_sends_the_query_time_to_query_gap_models(data, tmp_path):
    """HRNN's scores depend on the gap from the last event to the request: the
    quickstart asks at the time of the held-out event, through Client's
    ``query_times``, and gets the model's own top items at that gap."""
    import keras

    from tfrec.models import registry
    from tfrec.savedmodels import quickstart_export_and_serve

    keras.utils.set_random_seed(0)
    model = registry.build("hrnn", data, **registry.get("hrnn").test_config)
    res = quickstart_export_and_serve(model, data, str(tmp_path), k=5)
    seqs = data.test
    a, n = int(seqs.offsets[0]), len(seqs.sequence(0)) - 1
    t = seqs.times[a : a + n + 1]
    x = {"items": seqs.sequence(0)[None, :n].astype(np.int32),
         "next_deltas": np.diff(t)[None, :].astype(np.float32)}
    scores = model.score_prefix_batch(x)[0, 1:]
    want = data.item_vocab.ids(np.argsort(-scores, kind="stable")[:5] + 1)
    assert [i for i, _ in res["recommendations"]] == want
    np.testing.assert_allclose([s for _, s in res["recommendations"]], np.sort(scores)[::-1][:5], rtol=1e-4)


def test_client_checks_query_times_before_sending():
    from tfrec.serving import Client

    with Client("127.0.0.1:1", "rec", timeout=1) as c:  # nothing listens: the check comes first
        with pytest.raises(ValueError, match=r"query_times needs one time per history: shape \(2,\), got \(1,\)"):
            c.recommend([["1", "2"], ["3"]], k=3, query_times=[5.0])


def test_tensor_proto_conversion_matches_tensorflow():
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    from tfrec.serving.tensors import to_ndarray, to_proto

    arrays = [np.array([[b"a", b"bc"], [b"", b"\xff"]], object), np.arange(6, dtype=np.int32).reshape(2, 3),
              np.array([1.5, -np.inf], np.float32), np.array([3.0]), np.array([True, False]),
              np.arange(3, dtype=np.int64), np.zeros((0, 4), np.int32), np.array(7, np.int32),
              np.zeros((1, 0), object), np.array([], np.float64), np.zeros((2, 0), np.float32),
              np.array([[1e300, -0.0]], np.float64), np.array([[np.nan]], np.float32)]
    for a in arrays:
        np.testing.assert_array_equal(to_ndarray(tf.make_tensor_proto(a)), a)
        back = tf.make_ndarray(to_proto(a))
        assert back.shape == a.shape and back.dtype == a.dtype
        np.testing.assert_array_equal(back, a)
        again = to_ndarray(to_proto(a))  # our own round trip, exact
        assert again.shape == a.shape and again.dtype == a.dtype
        np.testing.assert_array_equal(again, a)
        assert to_proto(a).dtype == tf.make_tensor_proto(a).dtype
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)]))
    p.int_val.extend([4, 5, 6])
    np.testing.assert_array_equal(to_ndarray(p), [4, 5, 6])
    p2 = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, tensor_shape=p.tensor_shape)
    p2.int_val.append(9)  # TF's compact form: one value repeated
    np.testing.assert_array_equal(to_ndarray(p2), [9, 9, 9])
    # filling a response's own map entry in place gives the same tensor
    from tensorflow_serving.apis import predict_pb2 as _p

    resp = _p.PredictResponse()
    for name, a in (("ids", arrays[0]), ("scores", arrays[2])):
        assert to_proto(a, resp.outputs[name]) is resp.outputs[name]
        np.testing.assert_array_equal(tf.make_ndarray(resp.outputs[name]), a)


# ------------------------------------------------------------------ hot path
def test_server_path_adds_no_retracing(server, stubs):
    """50 gRPC requests of varying batch size and history length over three signatures
    register no new TF function (nothing on the request path traces), every signature is
    called through its pre-bound flat entry point, and the answers equal the in-process
    call of the same signature."""
    from tensorflow.python.eager import context

    from tfrec.serving.server import SignatureRunner

    pred, _ = stubs
    sv = server.model("rec").resolve()
    assert all(r.fast for r in sv.runners.values()), {k: r.fast for k, r in sv.runners.items()}
    state = {k: v.numpy() for k, v in sv.functions["initial_state"](sessions=tf.constant([b"a", b"b"])).items()}
    rng = np.random.default_rng(0)

    def inputs(i):
        b, t = 1 + i % 4, 1 + (i * 7) % 9
        items = rng.integers(1, 20, (b, t)).astype(str).astype(object)
        items = np.vectorize(lambda x: x.encode(), otypes=[object])(items)
        lengths = rng.integers(1, t + 1, b).astype(np.int32)
        if i % 3 == 0:
            return "serving_default", dict(items=items, lengths=lengths, k=np.full(b, 3, np.int32),
                                           exclude_seen=np.array([i % 2 == 0] * b))
        if i % 3 == 1:
            return "score", dict(items=items, lengths=lengths, candidates=items[:, :2].copy())
        return "step", dict(item=np.array([b"1", b"2"], object), k=np.array([2, 2], np.int32), **state)

    for i in range(3):  # one request per signature first
        sig, inp = inputs(i)
        pred.Predict(request(signature=sig, **inp), timeout=10)
    before = set(context.context().list_function_names())
    for i in range(50):
        sig, inp = inputs(i)
        resp = pred.Predict(request(signature=sig, **inp), timeout=10)
        want = SignatureRunner(sv.functions[sig])(inp)
        assert set(resp.outputs) == set(want)
        for k, v in want.items():
            got = tf.make_ndarray(resp.outputs[k])
            if v.dtype == object:
                np.testing.assert_array_equal(got, v)
            else:
                np.testing.assert_allclose(got, v, rtol=1e-6)
    after = set(context.context().list_function_names())
    assert after == before, f"the request path traced new functions: {sorted(after - before)[:5]}"


def test_signature_runner_fast_path_equals_public_call(base):
    """The direct eager call and the pre-bound flat call give exactly what the public
    keyword call gives, and a runner without them (another TF version) still works; the
    direct call neither aliases nor changes the caller's arrays."""
    from tfrec.serving.server import SignatureRunner

    loaded = tf.saved_model.load(os.path.join(str(base / "spop"), "1"))
    fn = loaded.signatures["serving_default"]
    inp = good_inputs()
    direct = SignatureRunner(fn)
    flat = SignatureRunner(fn)
    flat.direct = False
    slow = SignatureRunner(fn)
    slow.fast = slow.direct = False
    assert direct.direct and direct.fast and direct.names == sorted(inp)
    assert direct.out_names == sorted(fn.structured_outputs)
    want = {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inp.items()}).items()}
    before = {k: v.copy() for k, v in inp.items()}
    for r in (direct, flat, slow):
        got = r(inp)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
    for k, v in inp.items():
        np.testing.assert_array_equal(v, before[k])
    # a bad request fails the same way on every path (the server maps it to INVALID_ARGUMENT)
    bad = dict(inp, k=np.zeros_like(inp["k"]))
    for r in (direct, flat, slow):
        with pytest.raises(tf.errors.InvalidArgumentError, match="k must be >= 1"):
            r(bad)


def test_signature_runner_direct_step_matches_public_call(data, tmp_path):
    """The direct call on a recurrent model's ``step`` (single-threaded executor, state in
    and out) equals the public call, state tensors included."""
    from tfrec.models import registry
    from tfrec.serving.server import SignatureRunner

    model = registry.build("gru4rec_ce", data, **registry.get("gru4rec_ce").test_config)
    path = export(model, str(tmp_path / "gru"), data=data, step_mode="model", warmup=False)
    loaded = tf.saved_model.load(path)
    runner = SignatureRunner(loaded.signatures["step"])
    assert runner.direct and runner.single_threaded
    state = SignatureRunner(loaded.signatures["initial_state"])({"sessions": np.array([b"a", b"b"], object)})
    tokens = [t.encode() for t in list(data.item_vocab.tokens)[1:5]]
    for item in (tokens[:2], tokens[2:4]):
        inp = dict(state, item=np.array(item, object), k=np.array([3, 5], np.int32))
        got = runner(inp)
        want = loaded.signatures["step"](**{k: tf.constant(v) for k, v in inp.items()})
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k].numpy())
        state = {k: v for k, v in got.items() if k.startswith("state_")}


def test_signature_runner_single_threaded_executor(tmp_path):
    """Signatures without control flow run on TF's single-threaded executor (kernels on the
    calling thread); graphs with a loop keep the default executor, and a runner forced onto
    the single-threaded one falls back to the default on the first call instead of failing."""
    from tfrec.serving.server import SignatureRunner

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def loop(self, x):
            return {"y": tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2.0), (0, x))[1]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def flat(self, x):
            return {"y": x * 8.0}

    m = M()
    tf.saved_model.save(m, str(tmp_path / "m"), signatures={"loop": m.loop, "flat": m.flat})
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    x = {"x": np.array([1.0, 2.0], np.float32)}
    flat, loop = SignatureRunner(loaded.signatures["flat"]), SignatureRunner(loaded.signatures["loop"])
    assert flat.single_threaded and not loop.single_threaded
    for r in (flat, loop):
        np.testing.assert_array_equal(r(x)["y"], [8.0, 16.0])
    forced = SignatureRunner(loaded.signatures["loop"], single_threaded=True)
    np.testing.assert_array_equal(forced(x)["y"], [8.0, 16.0])
    assert not forced.single_threaded  # fell back after the executor refused the loop


def test_configure_tensorflow_thread_spinning():
    """``tfrec serve --tensorflow_thread_spinning off`` reaches TF's context config (in a
    fresh process, as the server sets it before TF starts); once TF runs it refuses."""
    import subprocess
    import sys

    from tfrec.serving.cli import configure_tensorflow

    code = ("from tfrec.serving.cli import configure_tensorflow\n"
            "configure_tensorflow(1, 2, True)\n"
            "from tensorflow.python.eager import context\n"
            "context.context().ensure_initialized()\n"
            "c = context.context().config\n"
            "print('CFG', c.experimental.disable_thread_spinning, c.intra_op_parallelism_threads, "
            "c.inter_op_parallelism_threads)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert "CFG True 1 2" in out.stdout, out.stderr[-2000:]
    tf.constant(1.0)  # this process's TF is running
    with pytest.raises(RuntimeError, match="already initialized"):
        configure_tensorflow(0, 0, True)
