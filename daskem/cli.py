"""``daskem`` / ``python -m daskem``: run | validate | predict | sample | report | make-data.

The command line only parses arguments and calls ``daskem.pipeline.run`` (or ``daskem.data.synthetic``).
Exit status: 0 on success; 2 for a bad config, bad data or an output in the way, printed as one
line ``error: ...`` without a traceback; 130 when interrupted. Anything else is a bug and keeps
its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Sequence

from daskem.errors import DaskemUserError

EPILOG = ("Exit status: 0 success, 2 bad config / data / output (one 'error:' line), 1 a bug in daskem "
          "(with its traceback), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run stops cleanly and keeps its checkpoint."""


def _on_signal(signum, frame) -> None:
    """Ctrl-C or SIGTERM: silence the cluster's shutdown chatter first, then unwind (closing the cluster)."""
    quiet_shutdown()
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from daskem.pipeline.progress import configure_logging

    configure_logging(-1 if args.quiet else args.verbose)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_signal)
    try:
        return args.handler(args)
    except DaskemUserError as exc:
        from daskem.data.credentials import mask_text

        print(f"error: {mask_text(str(exc))}", file=sys.stderr)  # URL passwords, even of commands without a config
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"error: {what}; no output was marked complete; run the same command again to resume from the "
              "checkpoint", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def quiet_shutdown() -> None:
    """Nothing but our one line after an interruption: the cluster's shutdown chatter (worker
    tracebacks, asyncio's 'Task exception was never retrieved') stays out of the terminal."""
    from daskem.pipeline.progress import LIBRARY_LOGGERS

    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daskem",
        description="Fit k-means and Gaussian mixtures by EM over Dask chunks of a Zarr store.",
        epilog=EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, epilog=EPILOG)
        sub.set_defaults(handler=handler)
        noise = sub.add_mutually_exclusive_group()
        noise.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-vv: distributed's too)")
        noise.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
        return sub

    def config_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("config", help="YAML config file (see configs/)")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config value, e.g. --set model.n_components=12 (repeatable; "
                              "the value is read as YAML)")

    run = command("run", "Fit the model a config describes and write model/, predictions.zarr and run.json.", _run)
    config_arguments(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bars over chunks")
    run.add_argument("--restart", action="store_true",
                     help="start afresh: discard the checkpoint an earlier, interrupted run of this output left")

    check = command("validate", "Check a config and open its data (shape, dtype, chunks) without fitting.", _validate)
    config_arguments(check)

    pred = command("predict", "Apply a saved model to a Zarr store; write predictions.zarr and run.json.", _predict)
    pred.add_argument("model", help="a run's output directory, or its model/ directory: local path or fsspec URL")
    pred.add_argument("data", help="Zarr store: local path or fsspec URL")
    pred.add_argument("-o", "--output", required=True, help="output directory or fsspec URL prefix (created)")
    pred.add_argument("--array", help="array inside the store's group")
    for flag, what in (("", "the data"), ("model-", "the model"), ("output-", "the output")):
        pred.add_argument(f"--{flag}storage-option", dest=f"{flag.replace('-', '_')}storage_options", action="append",
                          default=[], metavar="KEY=VALUE",
                          help=f"fsspec option for {what}'s URL (repeatable; ${{VAR}} is expanded)")
    pred.add_argument("--chunk-rows", type=int, help="rows per task (default: the store's chunks)")
    pred.add_argument("--allow-missing-chunks", action="store_true",
                      help="read chunks missing from the store as the fill value (default: refuse them)")
    pred.add_argument("--no-labels", action="store_true", help="do not write labels")
    pred.add_argument("--responsibilities", action="store_true", help="write responsibilities (gmm)")
    pred.add_argument("--log-density", action="store_true", help="write log_density (gmm)")
    pred.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    pred.add_argument("--outliers", action="store_true",
                      help="write outlier (bool) and log_density, flagged by the threshold saved with the model")
    pred.add_argument("--contamination", type=float,
                      help="write outlier and log_density, flagging this fraction of the new rows (instead of --outliers)")
    pred.add_argument("--outlier-threshold", type=float,
                      help="write outlier and log_density, flagging rows below this log-density (instead of --outliers)")
    cluster_arguments(pred)

    draw = command("sample", "Draw rows from a saved Gaussian mixture into a Zarr group (X, component), chunk by "
                   "chunk on the workers.", _sample)
    draw.add_argument("model", help="a run's output directory, or its model/ directory (a gmm model)")
    draw.add_argument("--rows", type=int, required=True, help="number of rows to draw")
    draw.add_argument("-o", "--output", required=True, help="Zarr group to create, e.g. synthetic.zarr")
    draw.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0): same seed, same rows")
    draw.add_argument("--chunk-rows", type=int, help="rows per task and per Zarr chunk (default: about 64 MiB of X)")
    draw.add_argument("--overwrite", action="store_true", help="replace an earlier daskem output at that path")
    cluster_arguments(draw)

    report = command("report", "Draw a run's report/ (index.html and figures) again from its output directory.",
                     _report)
    report.add_argument("run_dir", help="the output directory of a daskem run")

    make = command("make-data", "Write a synthetic Gaussian-mixture data set to Zarr, chunk by chunk; "
                   "its true parameters go to <path>.truth/.", _make_data)
    make.add_argument("path", help="Zarr store to create: local path or fsspec URL")
    make.add_argument("--n-samples", "--rows", type=int, required=True, help="number of rows")
    make.add_argument("--n-features", "--features", type=int, default=2, help="number of columns (default 2)")
    make.add_argument("--n-components", "--components", type=int, default=3, help="number of true components (default 3)")
    make.add_argument("--chunk-rows", type=int, help="rows per Zarr chunk (default: 1/16 of the rows, at most 32 MiB)")
    make.add_argument("--shard-rows", type=int, help="rows per shard (Zarr v3; a multiple of --chunk-rows)")
    make.add_argument("--dtype", default="float64", choices=("float32", "float64"), help="default float64")
    make.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    make.add_argument("--separation", type=float, default=8.0,
                      help="spread of the true means, in units of the components' scale (default 8)")
    make.add_argument("--array", default="X", help="array name inside a group (default X)")
    make.add_argument("--root-array", action="store_true", help="write the array at the store's root, no group")
    make.add_argument("--zarr-format", type=int, default=3, choices=(2, 3), help="Zarr format (default 3)")
    make.add_argument("--storage-option", dest="storage_options", action="append", default=[], metavar="KEY=VALUE",
                      help="fsspec option for a URL (repeatable)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing store")
    return parser


def cluster_arguments(sub: argparse.ArgumentParser) -> None:
    """The cluster flags of the commands without a config (predict, sample)."""
    sub.add_argument("--address", help="scheduler address (tcp://host:port, tls://host:port); default: an embedded cluster")
    sub.add_argument("--scheduler-file", help="JSON file a running scheduler wrote its address to (instead of --address)")
    sub.add_argument("--tls-ca-file", help="tls:// scheduler: PEM file of the CA that signed its certificate")
    sub.add_argument("--tls-cert", help="tls:// scheduler: PEM file of this client's certificate")
    sub.add_argument("--tls-key", help="tls:// scheduler: PEM file of this client's private key (unless in --tls-cert)")
    sub.add_argument("--n-workers", type=int, default=2, help="embedded cluster: worker processes (default 2)")
    sub.add_argument("--threads-per-worker", type=int, default=1, help="embedded cluster: threads per worker")
    sub.add_argument("--memory-limit", default="4GiB", help="embedded cluster: memory per worker (default 4GiB)")
    sub.add_argument("--no-progress", action="store_true", help="no progress bars over chunks")


def _cluster(args) -> dict:
    """``cluster`` of a config from the flags of ``cluster_arguments``."""
    return {"address": args.address, "scheduler_file": args.scheduler_file, "tls": _tls(args),
            "n_workers": args.n_workers, "threads_per_worker": args.threads_per_worker,
            "memory_limit": args.memory_limit}


def _run(args) -> int:
    from daskem.pipeline.config_loading import load_config
    from daskem.pipeline.run import run

    config = load_config(args.config, args.overrides)
    result = run(config, progress=not args.no_progress, restart=args.restart)
    _show(result.output, config)
    return 0


def _validate(args) -> int:
    from daskem.pipeline.config_loading import load_config
    from daskem.pipeline.run import validate

    config = load_config(args.config, args.overrides)
    source = validate(config)
    model = config.model
    what = f"{model.kind}, {model.n_components} components" + (
        f", {model.covariance_type} covariances, ranked by {model.criterion}" if model.kind == "gmm" else "")
    _show(f"ok: {args.config}: {source.name}: {source.shape[0]} rows x {source.shape[1]} features, "
          f"{source.dtype}, {len(source.row_chunks)} chunks of up to {max(source.row_chunks)} rows; "
          f"model {what}; output {config.output.location}", config)
    return 0


def _predict(args) -> int:
    from daskem.pipeline.config import PredictConfig
    from daskem.pipeline.config_loading import parse_config
    from daskem.pipeline.run import predict

    raw = {
        "model_path": args.model,
        "model_storage_options": _options(args.model_storage_options, "--model-storage-option"),
        "data": {"path": args.data, "array": args.array, "chunk_rows": args.chunk_rows,
                 "storage_options": _options(args.storage_options), "allow_missing_chunks": args.allow_missing_chunks},
        "cluster": _cluster(args),
        "output": {"path": args.output, "storage_options": _options(args.output_storage_options, "--output-storage-option"),
                   "labels": not args.no_labels, "responsibilities": args.responsibilities,
                   "log_density": args.log_density, "overwrite": args.overwrite, "report": False,
                   "outliers": _outlier_rule(args)},
    }
    config = parse_config(raw, source="predict", model=PredictConfig)
    result = predict(config, progress=not args.no_progress)
    _show(result.output, config)
    return 0


def _outlier_rule(args) -> dict | None:
    """``output.outliers`` of predict: {} (the saved threshold), a contamination or a threshold."""
    from daskem.errors import ConfigError

    given = [flag for flag, value in (("--outliers", args.outliers), ("--contamination", args.contamination),
                                      ("--outlier-threshold", args.outlier_threshold)) if value not in (None, False)]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} each choose the outlier threshold; give one")
    if not given:
        return None
    return {"contamination": args.contamination, "threshold": args.outlier_threshold}


def _sample(args) -> int:
    from daskem.pipeline.config_loading import parse_config
    from daskem.pipeline.sampling import SampleConfig, sample

    raw = {"model_path": args.model, "rows": args.rows, "seed": args.seed, "chunk_rows": args.chunk_rows,
           "output": args.output, "overwrite": args.overwrite, "cluster": _cluster(args)}
    config = parse_config(raw, source="sample", model=SampleConfig)
    _show(sample(config, progress=not args.no_progress), config)
    return 0


def _report(args) -> int:
    from daskem.outputs.report import regenerate

    _show(regenerate(args.run_dir))
    return 0


def _make_data(args) -> int:
    from daskem.data.synthetic import make_data

    summary = make_data(
        args.path, n_samples=args.n_samples, n_features=args.n_features, n_components=args.n_components,
        chunk_rows=args.chunk_rows, shard_rows=args.shard_rows, dtype=args.dtype, seed=args.seed,
        separation=args.separation, array=None if args.root_array else args.array, zarr_format=args.zarr_format,
        storage_options=_options(args.storage_options), overwrite=args.overwrite,
    )
    _show(summary["path"])
    return 0


def _show(result, config=None) -> None:
    """Print a command's result line without the config's secrets or any URL's password."""
    from daskem.data.credentials import mask_text

    secrets = frozenset()
    if config is not None:
        from daskem.pipeline.config_loading import secret_values

        secrets = secret_values(config)
    print(mask_text(str(result), secrets))


def _tls(args) -> dict | None:
    """``cluster.tls`` from the --tls-* flags of ``predict``; None when none is given."""
    from daskem.errors import ConfigError

    files = {"ca_file": args.tls_ca_file, "cert_file": args.tls_cert, "key_file": args.tls_key}
    if not any(files.values()):
        return None
    if not (args.tls_ca_file and args.tls_cert):
        raise ConfigError("--tls-ca-file and --tls-cert go together (with --tls-key unless the key is in "
                          "--tls-cert); give both")
    return files


def _options(pairs: Sequence[str], flag: str = "--storage-option") -> dict:
    from daskem.pipeline.config_loading import apply_override

    out: dict = {}
    for index, pair in enumerate(pairs):  # a message hides the value: the flag's place tells which one
        out = apply_override(out, pair, flag if len(pairs) == 1 else f"{flag} (#{index + 1} of {len(pairs)})")
    return out
