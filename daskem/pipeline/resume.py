"""Resuming a run: its checkpoint beside the output, the slabs and preprocessing it had, its identity.

``run`` keeps one checkpoint file per output, ``<output>.checkpoint.npz`` in the output's parent
directory (an object beside the output's prefix in an object store), for the whole run: the slab plan, the fitted preprocessing, and every pass of the fit
(see ``daskem.engine.checkpoint``). A re-run of the same config (same model, preprocessing and data)
resumes from it; a run of another config refuses it with one line, or starts afresh with
``--restart``. It is removed once the outputs are complete.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from typing import Iterator

from daskem.data.credentials import mask_text, without_url_passwords
from daskem.data.stores import DataSource, open_data
from daskem.engine.checkpoint import Checkpoint, CheckpointMismatch
from daskem.errors import DaskemUserError, OutputError
from daskem.models.preprocessing import Preprocessing, fit_preprocessing
from daskem.pipeline.watchdog import ClusterError

logger = logging.getLogger("daskem")

SLABS_STAGE = "slabs"
PREPROCESS_STAGE = "preprocess"


def checkpoint_path(output: str) -> str:
    """Where the checkpoint of a run to ``output`` (a local path or a URL) lives: beside it, never
    inside it; in an object store, an object beside the output's prefix, written whole."""
    return f"{output.rstrip('/')}.checkpoint.npz"


def run_checkpoint(config, source: DataSource, store_contents: str, *, restart: bool = False) -> Checkpoint:
    """The checkpoint of ``config``'s run; its identity is what the results depend on: the model, the
    preprocessing and the data (store, array, shape, dtype, chunks, and ``store_contents``, the digest
    of its chunks' stamps that ``check_chunks`` returns), not the cluster, the outputs or the
    credentials. The checkpoint is a file beside the output, so it keeps the store's path masked and,
    to tell stores apart that masking makes alike, a digest of the path without its password."""
    identity = {
        "model": config.model.model_dump(mode="json"),
        "preprocess": None if config.preprocess is None else config.preprocess.model_dump(mode="json"),
        "data": {"path": mask_text(source.path), "path_sha256": path_digest(source.path), "array": source.array,
                 "shape": list(source.shape), "dtype": source.dtype, "store_chunks": list(source.store_chunks)},
        "store_contents": store_contents,
    }
    checkpoint = Checkpoint(checkpoint_path(config.output.location), identity, restart=restart,
                            storage_options=config.output.storage_options)
    if restart and checkpoint.stages():
        checkpoint.remove()
        logger.info("--restart: the checkpoint of the earlier run was removed")
    return checkpoint


def path_digest(path: str) -> str:
    """SHA-256 of a store's path without its URL password: another password still opens the same data."""
    return hashlib.sha256(without_url_passwords(path).encode()).hexdigest()


@contextmanager
def dropped_if_futile(checkpoint: Checkpoint) -> Iterator[None]:
    """Keep the checkpoint when the run stops for a reason outside the config and data (interrupted,
    the cluster lost, the disk full), so the same command resumes; drop it when the config or the
    data must change first (NaN rows, a collapsed component): a resume would only repeat the error."""
    try:
        yield
    except (CheckpointMismatch, ClusterError, OutputError):
        raise
    except DaskemUserError:
        checkpoint.remove()
        raise


def resume_slabs(checkpoint: Checkpoint, data_config, X):
    """``X`` cut into the slabs of the checkpointed run (the merge order, so the same bits), whatever
    the cluster now; the first run records its own plan."""
    rows = checkpoint.load(SLABS_STAGE)
    if rows is None:
        checkpoint.save(SLABS_STAGE, int(max(X.chunks[0])))
        return X
    if rows != max(X.chunks[0]):
        logger.info("resuming with the checkpoint's slabs of %d rows", rows)
        _, X = open_data(data_config.model_copy(update={"chunk_rows": rows}))
    return X


def resume_preprocessing(checkpoint: Checkpoint, X, config) -> Preprocessing:
    """The fitted preprocessing of the checkpointed run, or a new one fitted now and saved."""
    saved = checkpoint.load(PREPROCESS_STAGE)
    if saved is not None:
        return Preprocessing.from_arrays(X.shape[1], saved)
    prep = fit_preprocessing(X, config.preprocess, random_state=config.model.random_state)
    checkpoint.save(PREPROCESS_STAGE, prep.to_arrays())
    return prep
