"""A corpus's embeddings on disk, in shards: written a batch at a time, read a slice at a time.

A directory holds

  meta.json              {"rows": N, "texts_sha256": of the ids and texts, "dim": E,
                          "dtype": "float32" | "bfloat16", "shard_size": S, and what
                          embedded them (`encoder_source`): "checkpoint", "step",
                          "model_sha256", "vocabulary_sha256", "length"}
  shard-00000.ids.json   the ids of rows [0, S), in order
  shard-00000.npy        their embeddings, [S, E] (bfloat16 stored as its uint16 bits)
  shard-00001...         rows [S, 2S), ...; the last shard may be shorter

Shard j holds rows [jS, (j+1)S) of the corpus and is written by process j % P of P. Each
process tokenises and embeds only the rows of its shards, `batch_size / P` at a time, the
next batch tokenised in a thread while the devices embed this one, and writes each shard
once it is whole (ids, then embeddings, each to a temporary name and renamed): no host holds
more than one batch of token ids and one shard of embeddings. A shard whose embeddings file
exists is done; a killed encode, run again, embeds only the others. A directory whose
meta.json differs in any field (a corrected text under the same id, another vocabulary,
model config, checkpoint, step or length; a meta.json that lacks a field) is never resumed:
it is refused, naming the fields, or its embeddings are replaced.

`EmbeddingShards(directory)` reads a finished directory: `len()`, `shards[a:b]` ([b - a, E]
float32, read from the files on demand) and `ids()`, which `retrieval.sharded_top_k` streams
through the devices. Slices are read with plain file reads, not memory maps, so that the
pages read stay in the page cache, out of the process's resident memory: a search holds one
chunk, whatever N.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import pathlib
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from samtone_jax import atomic, data_files

_LOG = logging.getLogger("samtone_jax.embedding_shards")
DTYPES = {"float32": np.float32, "bfloat16": jnp.bfloat16}
META = "meta.json"
ALIGNMENT = 64  # bytes: JAX's CPU backend uses a host array so aligned in place


def host_buffer(rows: int, dim: int) -> np.ndarray:
  """An uninitialised [rows, dim] float32 array whose data starts on a 64-byte boundary.
  JAX's CPU backend takes such an array as a device buffer in place; any other it copies
  (about 4x the time of a numpy copy, for fresh pages)."""
  raw = np.empty(rows * dim * 4 + ALIGNMENT, np.uint8)
  start = -raw.ctypes.data % ALIGNMENT
  return raw[start:start + rows * dim * 4].view(np.float32).reshape(rows, dim)


def _shard_path(directory: pathlib.Path, shard: int, suffix: str) -> pathlib.Path:
  return directory / f"shard-{shard:05d}.{suffix}"


def texts_sha256(corpus: Mapping[str, str]) -> str:
  """The first 16 hex digits of a sha256 over a corpus's ids and texts, in order."""
  digest = hashlib.sha256()
  for doc_id, text in corpus.items():
    digest.update(f"{len(doc_id)}:{doc_id}{len(text)}:{text}".encode("utf-8", "surrogatepass"))
  return digest.hexdigest()[:16]


def encoder_source(model: Any, vocabulary: Any, checkpoint: str | pathlib.Path,
                   step: Optional[int], length: int) -> dict[str, Any]:
  """What determines a corpus's embeddings besides its texts, for `encode`'s `source`.

  Args:
    model: the model (a dataclass, e.g. a DualEncoder): its fields' values are hashed.
    vocabulary: a SentencePiece vocabulary (its model's serialized proto is hashed, extra
      ids included), or any other (its class and plain settings are hashed).
    checkpoint, step: the parameters' folder (or training's MODEL_DIR) and step (None for a
      pretrained folder).
    length: the tokens a passage is cut to.
  """
  settings = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.name not in ("parent", "name")}  # a Flax module's place in a tree
  spm = getattr(vocabulary, "sp_model", None)
  if not isinstance(spm, bytes):
    plain = {k: v for k, v in sorted(vars(vocabulary).items())
             if isinstance(v, (str, int, float, bool, tuple, type(None)))}
    spm = f"{type(vocabulary).__module__}.{type(vocabulary).__qualname__} {plain!r}".encode()
  return {"checkpoint": str(checkpoint), "step": step, "length": length,
          "model_sha256": hashlib.sha256(repr(settings).encode()).hexdigest()[:16],
          "vocabulary_sha256": hashlib.sha256(spm).hexdigest()[:16]}


def _check_meta(directory: pathlib.Path, want: dict, replace: bool) -> None:
  """Writes meta.json, or checks that the one there describes the same encoding (with
  `replace`, embeddings of another encoding are deleted instead)."""
  path = directory / META
  if path.exists():
    have = json.loads(path.read_text())
    differs = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
    if differs and replace:
      _LOG.info("Replacing the embeddings in %s (%s differ).", directory, ", ".join(differs))
      multihost_utils.sync_global_devices("embedding_shards: read the old meta.json")
      if jax.process_index() == 0:
        for old in [path, *directory.glob("shard-*")]:
          old.unlink()
      multihost_utils.sync_global_devices("embedding_shards: deleted the old shards")
      _check_meta(directory, want, replace)
    elif differs:
      raise data_files.DataError(path, None, "these embeddings are of another corpus or"
                                             " model: " + ", ".join(
                                                 f"{k} {a!r} there, {b!r} now"
                                                 for k, (a, b) in differs.items())
                                             + "; use another directory.")
  elif jax.process_index() == 0:
    directory.mkdir(parents=True, exist_ok=True)
    atomic.write_atomically(path, json.dumps(want, indent=2))


def _local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of an array split over its first axis, in order."""
  parts = {s.index[0].start or 0: s.data for s in array.addressable_shards}
  return np.concatenate([np.asarray(parts[start]) for start in sorted(parts)])


def encode(directory: str | pathlib.Path, embed: Callable[[Any, jax.Array], jax.Array],
           params: Any, corpus: Mapping[str, str], tokenize: Callable[[Sequence[str]],
                                                                        np.ndarray],
           mesh: Mesh, *, batch_size: int = 256, shard_size: int = 100_000,
           dtype: str = "float32", source: Optional[Mapping[str, Any]] = None,
           replace: bool = False,
           data_axes: Sequence[str] = ("data",)) -> "EmbeddingShards":
  """Embeds `corpus` into `directory` (see the module docstring); resumes a killed run.

  Args:
    directory: the shards' directory (created).
    embed: jit-able `(params, [b, L] int32) -> [b, E]`, e.g. `embedder.encoders(model)[1]`.
    params: its parameters.
    corpus: {id: text}, in the order of the rows.
    tokenize: texts -> [len(texts), L] int32 token ids (`retrieval.tokenize`).
    mesh: the device mesh; every process calls `encode` with the same arguments.
    batch_size: rows a global batch (rounded up to a multiple of the data devices).
    shard_size: rows a shard.
    dtype: "float32" or "bfloat16", as stored.
    source: what embeds (`encoder_source`: checkpoint, step, model, vocabulary, length),
      kept in meta.json and checked on resume.
    replace: whether embeddings of another corpus (texts), encoder or dtype in `directory`
      are deleted (else an error).

  Returns:
    The finished directory's `EmbeddingShards`.

  Raises:
    DataError: `directory` holds the embeddings of another corpus, encoder or dtype (and
      not `replace`), naming the fields that differ.
  """
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
  directory = pathlib.Path(directory)
  data_axes = tuple(data_axes)
  devices = math.prod(mesh.shape[a] for a in data_axes)
  processes = jax.process_count()
  batch_size = math.ceil(batch_size / devices) * devices
  local_batch = batch_size // processes
  ids = list(corpus)
  width = tokenize([""]).shape[1]
  dim = jax.eval_shape(embed, params, jax.ShapeDtypeStruct((batch_size, width),
                                                           np.int32)).shape[-1]
  _check_meta(directory, {"rows": len(ids), "texts_sha256": texts_sha256(corpus),
                          "dim": int(dim), "dtype": dtype, "shard_size": shard_size,
                          **(source or {})}, replace)
  multihost_utils.sync_global_devices("embedding_shards.encode: meta.json")

  size = lambda shard: min(shard_size, len(ids) - shard * shard_size)
  todo = [j for j in range(jax.process_index(), math.ceil(len(ids) / shard_size), processes)
          if not _shard_path(directory, j, "npy").exists()]
  rows = np.concatenate([np.arange(j * shard_size, j * shard_size + size(j)) for j in todo]
                        or [np.zeros(0, int)])  # this process's rows, in order
  steps = int(multihost_utils.process_allgather(
      np.int32(math.ceil(len(rows) / local_batch))).max())  # the same in every process
  _LOG.info("Encoding %d of %d rows (%d shards of %d) into %s.", len(rows), len(ids),
            len(todo), shard_size, directory)

  def batch(step: int) -> np.ndarray:
    texts = [corpus[ids[r]] for r in rows[step * local_batch:(step + 1) * local_batch]]
    tokens = tokenize(texts) if texts else np.zeros((0, width), np.int32)
    return np.pad(tokens, ((0, local_batch - len(tokens)), (0, 0)))

  sharding = NamedSharding(mesh, PartitionSpec(data_axes))
  jitted = jax.jit(embed, out_shardings=sharding)
  new_shard = lambda: np.empty((size(todo[0]), dim), DTYPES[dtype]) if todo else None
  shard, filled = new_shard(), 0  # the embeddings of the next shard to write, rows filled
  start = time.time()
  with concurrent.futures.ThreadPoolExecutor(1) as tokenizer:
    next_batch = tokenizer.submit(batch, 0)
    for step in tqdm.tqdm(range(steps), desc="encoding", unit="batch",
                          disable=jax.process_index() > 0 or steps < 2):
      tokens = next_batch.result()
      if step + 1 < steps:  # tokenised while the devices embed this batch
        next_batch = tokenizer.submit(batch, step + 1)
      embedded = _local_rows(jitted(params, jax.make_array_from_process_local_data(
          sharding, tokens)))[:max(0, len(rows) - step * local_batch)]  # padding dropped
      while len(embedded):
        take = min(len(embedded), len(shard) - filled)
        shard[filled:filled + take], embedded = embedded[:take], embedded[take:]
        filled += take
        if filled == len(shard):
          first = todo[0] * shard_size
          _write_shard(directory, todo.pop(0), ids[first:first + len(shard)], shard)
          shard, filled = new_shard(), 0
  if len(rows):
    seconds = time.time() - start
    _LOG.info("Encoded %d rows in %.0f s (%.0f passages/s).", len(rows), seconds,
              len(rows) / seconds)
  multihost_utils.sync_global_devices("embedding_shards.encode: done")
  return EmbeddingShards(directory)


def _write_shard(directory: pathlib.Path, shard: int, ids: Sequence[str],
                 embeddings: np.ndarray) -> None:
  atomic.write_atomically(_shard_path(directory, shard, "ids.json"), json.dumps(list(ids)))
  stored = embeddings.view(np.uint16) if embeddings.dtype == jnp.bfloat16 else embeddings
  atomic.write_atomically(_shard_path(directory, shard, "npy"), lambda f: np.save(f, stored))


class EmbeddingShards:
  """A finished shard directory, read as an [N, E] float32 array: `len()`, `[a:b]`, `ids()`.

  Raises (on opening):
    DataError: naming the file: no meta.json, a missing or cut shard, a shard of another
      width or row count, ids that do not match their embeddings.
  """

  def __init__(self, directory: str | pathlib.Path):
    self.directory = pathlib.Path(directory)
    meta_path = self.directory / META
    if not meta_path.exists():
      raise data_files.DataError(meta_path, None, "no embeddings here (written by"
                                                  " `python -m samtone_jax.encode`).")
    self.meta = json.loads(meta_path.read_text())
    self.rows, self.dim = self.meta["rows"], self.meta["dim"]
    self.shard_size = self.meta["shard_size"]
    self._shards = []  # (path, offset of the data in the file, rows) a shard
    for shard in range(math.ceil(self.rows / self.shard_size)):
      path = _shard_path(self.directory, shard, "npy")
      want = (min(self.shard_size, self.rows - shard * self.shard_size), self.dim)
      if not path.exists():
        raise data_files.DataError(path, None, "missing: the encode did not finish; run it"
                                               " again to embed the missing shards.")
      try:  # checks the header and the length; the mapping is dropped at once
        array = np.load(path, mmap_mode="r")
      except ValueError as error:
        raise data_files.DataError(path, None, f"not a whole .npy file ({error}).") from error
      if array.shape != want:
        raise data_files.DataError(path, None, f"holds {list(array.shape)} embeddings where"
                                               f" {META} says {list(want)}.")
      self._shards.append((path, array.offset, want[0]))
      del array
    self._stored = np.dtype(np.uint16 if self.meta["dtype"] == "bfloat16" else np.float32)

  def __len__(self) -> int:
    return self.rows

  def __getitem__(self, rows: slice) -> np.ndarray:
    """Rows [start, stop) as float32 [stop - start, E], in a `host_buffer`."""
    start, stop, _ = rows.indices(self.rows)
    out = host_buffer(max(stop - start, 0), self.dim)
    for shard in range(start // self.shard_size, math.ceil(stop / self.shard_size)):
      path, offset, count = self._shards[shard]
      first = max(start - shard * self.shard_size, 0)
      last = min(stop - shard * self.shard_size, count)
      rows_out = out[shard * self.shard_size + first - start:][:last - first]
      with open(path, "rb") as f:
        f.seek(offset + first * self.dim * self._stored.itemsize)
        if self.meta["dtype"] == "bfloat16":
          stored = np.fromfile(f, np.uint16, (last - first) * self.dim)
          read = stored.size * 2
          rows_out.reshape(-1)[:stored.size] = stored.view(jnp.bfloat16)
        else:
          read = f.readinto(memoryview(rows_out.reshape(-1)).cast("B"))
      if read != rows_out.nbytes // 4 * self._stored.itemsize:
        raise data_files.DataError(path, None, "cut short while being read.")
    return out

  def ids(self) -> list[str]:
    """Every row's id, in order."""
    out = []
    for shard in range(len(self._shards)):
      path = _shard_path(self.directory, shard, "ids.json")
      shard_ids = json.loads(path.read_text()) if path.exists() else None
      rows = self._shards[shard][2]
      if shard_ids is None or len(shard_ids) != rows:
        count = "no" if shard_ids is None else len(shard_ids)
        raise data_files.DataError(path, None, f"{count} ids for {rows} rows.")
      out.extend(shard_ids)
    return out
