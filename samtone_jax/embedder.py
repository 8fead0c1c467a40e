"""One way from a checkpoint (or training's parameters) to embeddings: `Embedder`.

  embedder = Embedder.from_checkpoint(model, "/tmp/run", {"queries": 64, "passages": 256},
                                      vocabulary=resolve_vocabulary(None, "my_task"))
  queries = embedder.queries(["how do I parse a date?"])   # [1, E] float32
  passages = embedder.passages(["def parse_date(text): ..."])

An Embedder holds the encode functions, their parameters partitioned over its mesh, the
vocabulary and the lengths texts are cut to, and what labels its outputs: the checkpoint
and step it was loaded from, looked up once (`embedding_shards.encoder_source`), so that a
checkpoint saved meanwhile changes neither. `evaluate`, `encode`, `mine`, `analysis` and
`export` load their checkpoint through it, and training's evaluation wraps its in-memory
parameters in one (`Embedder.of_model`).
"""

import dataclasses
import pathlib
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
import seqio

from samtone_jax import checkpoints, dual_encoder, embedding_shards, partitioning, retrieval

Encoder = Callable[[Any, jax.Array], jax.Array]


def task_vocabulary(mixture_or_task_name: str) -> seqio.Vocabulary:
  """The vocabulary of a task's (or mixture's) texts, its `queries` feature's."""
  return seqio.get_mixture_or_task(mixture_or_task_name).output_features["queries"].vocabulary


def resolve_vocabulary(vocabulary: Optional[seqio.Vocabulary],
                       mixture_or_task_name: Optional[str]) -> seqio.Vocabulary:
  """`vocabulary` (VOCABULARY) if given, else the task's (MIXTURE_OR_TASK_NAME).

  Raises:
    ValueError: neither is set.
  """
  if vocabulary is not None:
    return vocabulary
  if mixture_or_task_name is None:
    raise ValueError("set VOCABULARY or MIXTURE_OR_TASK_NAME (whose vocabulary to use).")
  return task_vocabulary(mixture_or_task_name)


def encoders(model: dual_encoder.DualEncoder) -> tuple[Encoder, Encoder]:
  """(encode_queries, encode_passages): jit-able `(params, [b, L] int32) -> [b, E]`."""
  def encoder(method):
    return lambda params, ids: model.apply({"params": params}, ids, method=method)
  return encoder(model.encode_queries), encoder(model.encode_passages)


@dataclasses.dataclass(frozen=True)
class Embedder:
  """Texts to embeddings with one set of parameters.

  Attributes:
    encode_queries, encode_passages: jit-able `(params, [b, L] int32) -> [b, E]`.
    params: their parameters, partitioned over `mesh`.
    vocabulary: tokenises the texts.
    lengths: {"queries": Lq, "passages": Lp}: texts are cut to these (EOS included).
    mesh: the device mesh; batches are split over its "data" axis.
    batch_size: texts embedded at a time.
    source: what labels corpus embeddings (`embedding_shards.encoder_source`: checkpoint,
      step, model, vocabulary, length), or None.
  """
  encode_queries: Encoder
  encode_passages: Encoder
  params: Any
  vocabulary: seqio.Vocabulary
  lengths: Mapping[str, int]
  mesh: jax.sharding.Mesh
  batch_size: int = 256
  source: Optional[Mapping[str, Any]] = None

  @classmethod
  def of_model(cls, model: dual_encoder.DualEncoder, params: Any,
               vocabulary: seqio.Vocabulary, lengths: Mapping[str, int],
               mesh: jax.sharding.Mesh, *, checkpoint: str | pathlib.Path,
               step: Optional[int], batch_size: int = 256) -> "Embedder":
    """The embedder of `model` with `params` (e.g. training's, in memory), whose outputs
    are labelled with `checkpoint` (a folder, or training's MODEL_DIR) and `step` (None
    for a pretrained folder)."""
    encode_queries, encode_passages = encoders(model)
    return cls(encode_queries, encode_passages, params, vocabulary, lengths, mesh,
               batch_size=batch_size, source=embedding_shards.encoder_source(
                   model, vocabulary, checkpoint, step, lengths["passages"]))

  @classmethod
  def from_checkpoint(cls, model: dual_encoder.DualEncoder,
                      checkpoint_path: str | pathlib.Path, lengths: Mapping[str, int], *,
                      vocabulary: seqio.Vocabulary, num_partitions: int = 1,
                      batch_size: int = 256, name: str = "CHECKPOINT_PATH") -> "Embedder":
    """The embedder of `model` with the parameters at `checkpoint_path`: a training
    MODEL_DIR (its newest checkpoint, looked up once, as process 0 found it), one of its
    `checkpoints/<step>` folders, or a Hugging Face T5 / sentence-transformers folder,
    partitioned over a mesh with a "model" axis of `num_partitions` devices.

    Args:
      name: the flag or gin macro that named `checkpoint_path`, for the errors.

    Raises:
      FileNotFoundError: no checkpoint there (`checkpoints.resolve_checkpoint`).
      pretrained.CheckpointError: the checkpoint does not restore, or the pretrained
        folder does not fit the model.
    """
    mesh = partitioning.create_mesh(num_partitions)
    checkpoint, step = checkpoints.pinned_checkpoint(checkpoint_path, name)
    params = checkpoints.load_params(model, checkpoint, lengths, mesh, name)
    return cls.of_model(model, params, vocabulary, lengths, mesh, checkpoint=checkpoint,
                        step=step, batch_size=batch_size)

  @property
  def step(self) -> Optional[int]:
    """The step of the parameters (None: a pretrained folder, or unlabelled)."""
    return (self.source or {}).get("step")

  def queries(self, texts: Sequence[str]) -> np.ndarray:
    """[len(texts), E] float32 query embeddings, in every process."""
    return self._embed(self.encode_queries, texts, self.lengths["queries"])

  def passages(self, texts: Sequence[str]) -> np.ndarray:
    """[len(texts), E] float32 passage embeddings, in every process."""
    return self._embed(self.encode_passages, texts, self.lengths["passages"])

  def _embed(self, encode: Encoder, texts: Sequence[str], length: int) -> np.ndarray:
    return retrieval.encode(encode, self.params, retrieval.Tokenized(
        texts, self.vocabulary, length), self.mesh, self.batch_size)

  def encode_corpus(self, directory: str | pathlib.Path, corpus: Mapping[str, str], *,
                    shard_size: int = 100_000, dtype: str = "float32",
                    replace: bool = False) -> embedding_shards.EmbeddingShards:
    """The passage embeddings of `corpus` ({id: text}) in shards in `directory`, labelled
    with `source` (`embedding_shards.encode`: resumed when of the same texts and source;
    with `replace`, made again when not, else refused)."""
    length = self.lengths["passages"]
    return embedding_shards.encode(
        directory, self.encode_passages, self.params, corpus,
        lambda texts: retrieval.tokenize(texts, self.vocabulary, length), self.mesh,
        batch_size=self.batch_size, shard_size=shard_size, dtype=dtype, source=self.source,
        replace=replace)
