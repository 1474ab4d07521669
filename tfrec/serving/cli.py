"""``tfrec serve``: TF Serving's gRPC and REST APIs with TF Serving's flag names.

    tfrec serve --model_name NAME --model_base_path DIR [--port 8500] [--rest_api_port 8501]
    tfrec serve --model_config_file serving/models.config [--enable_batching
                --batching_parameters_file serving/batching_parameters.txt]
"""

from __future__ import annotations

import logging


def _channel_args(text: str):
    out = []
    for part in filter(None, (text or "").split(",")):
        k, _, v = part.partition("=")
        out.append((k.strip(), int(v) if v.strip().lstrip("-").isdigit() else v.strip()))
    return out


def configure_tensorflow(intra_op: int = 0, inter_op: int = 0, disable_thread_spinning: bool = False) -> None:
    """TF runtime settings of a serving process; call before TensorFlow runs anything.

    Args:
        intra_op, inter_op: thread pool sizes (0: TF's default).
        disable_thread_spinning: TF's worker threads sleep as soon as they run out of
            work instead of spinning for more (``ConfigProto.experimental.
            disable_thread_spinning``, which TF Serving takes from its session config).
            Spinning shaves a wake-up off back-to-back ops on an idle many-core host, but
            on a busy or small host the spinning threads take the cores the request
            threads (and the client) need.
    """
    import tensorflow as tf

    if disable_thread_spinning:
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.eager import context

        ctx = context.context()
        if ctx._context_handle is not None:  # noqa: SLF001 - no public setter for this option
            raise RuntimeError("configure_tensorflow: TensorFlow is already initialized")
        cfg = config_pb2.ConfigProto()
        if ctx._config is not None:  # noqa: SLF001
            cfg.CopyFrom(ctx._config)  # noqa: SLF001
        cfg.experimental.disable_thread_spinning = True
        ctx._config = cfg  # noqa: SLF001 - read when the context initializes
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra_op))
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))


def cmd_serve(args):
    from tfrec.serving.server import BatchingOptions, ModelServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_tensorflow(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism,
                         args.tensorflow_thread_spinning == "off")
    if bool(args.model_config_file) == bool(args.model_base_path):
        raise SystemExit("error: give either --model_base_path (with --model_name) or --model_config_file")
    batching = None
    if args.enable_batching:
        batching = (BatchingOptions.from_file(args.batching_parameters_file)
                    if args.batching_parameters_file else BatchingOptions())
    kw = dict(enable_batching=args.enable_batching, batching=batching,
              file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
              model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
              max_message_bytes=args.max_message_bytes, grpc_max_threads=args.grpc_max_threads,
              grpc_channel_arguments=_channel_args(args.grpc_channel_arguments))
    try:
        if args.model_config_file:
            server = ModelServer.from_config_file(args.model_config_file, **kw)
        else:
            server = ModelServer.from_base_path(args.model_name, args.model_base_path, **kw)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    server.start(port=args.port, rest_api_port=args.rest_api_port or None, host=args.host)
    print(f"serving {sorted(server.models)} gRPC {args.host}:{server.port}"
          + (f" REST http://{args.host}:{server.rest_api_port}" if server.rest_api_port else ""), flush=True)
    server.wait()


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve SavedModels over TF Serving's gRPC and REST APIs")
    p.add_argument("--model_name", default="default", help="name of the model (with --model_base_path)")
    p.add_argument("--model_base_path", help="directory holding <version>/ SavedModels")
    p.add_argument("--model_config_file", help="text ModelServerConfig with a model_config_list")
    p.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0)
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: pick a free port)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0: disabled)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    p.add_argument("--enable_batching", action="store_true")
    p.add_argument("--batching_parameters_file", help="text BatchingParameters")
    p.add_argument("--max_message_bytes", type=int, default=64 * 1024 * 1024,
                   help="gRPC max send/receive message size")
    p.add_argument("--grpc_max_threads", type=int, default=16)
    p.add_argument("--grpc_channel_arguments", default="", help="k=v,k=v gRPC server arguments")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads per op (0: TF default); 1 lowers latency of small models on busy hosts")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="ops run in parallel (0: TF default)")
    p.add_argument("--tensorflow_thread_spinning", choices=["on", "off"], default="on",
                   help="off: idle TF worker threads sleep at once instead of spinning (less CPU, "
                        "lower latency on busy or small hosts)")
    p.set_defaults(func=cmd_serve)
