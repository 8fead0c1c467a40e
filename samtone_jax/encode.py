r"""Embeds a corpus into shards on disk: `python -m samtone_jax.encode --gin_file=...`.

  python -m samtone_jax.encode --gin_file=/tmp/run/config.gin --gin_file=runs/encode.gin \
      --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.ENCODE_CORPUS="'beir:/data/nfcorpus'" \
      --gin.ENCODE_OUTPUT_DIR="'/tmp/run/nfcorpus.embeddings'"

The model and CHECKPOINT_PATH are as for `evaluate`. ENCODE_CORPUS is an evaluation set's
name (its corpus: a registered set, or `beir:<folder>`) or a BEIR `corpus.jsonl` file.
ENCODE_OUTPUT_DIR gets meta.json and shards of ENCODE_SHARD_SIZE rows (ids and embeddings,
float32 or ENCODE_DTYPE = 'bfloat16'; samtone_jax/embedding_shards.py). Each process embeds
its own shards; a killed run, started again, embeds only the shards not yet written. A
directory of other texts (the same ids), another vocabulary, model config, checkpoint, step
or length is refused, naming what differs (meta.json records each).
`embedding_shards.EmbeddingShards(ENCODE_OUTPUT_DIR)` reads them, and
`retrieval.sharded_top_k` searches them a chunk at a time.
"""

if __name__ == "__main__":  # a program: the host set up before these imports load TensorFlow
  from samtone_jax import launch as _launch  # pylint: disable=g-import-not-at-top
  _launch.setup_host()

import pathlib
from typing import Optional, Sequence

import gin

from samtone_jax import beir_format, dual_encoder, embedder, embedding_shards, eval_sets, launch


def read_corpus(name: str) -> dict[str, str]:
  """{id: text} of an evaluation set `name`, or of a BEIR corpus.jsonl file."""
  if pathlib.PurePath(name).name.removesuffix(".gz").endswith(".jsonl"):
    return beir_format.read_corpus(name)
  return eval_sets.get(name).corpus


def encode(*, model: dual_encoder.DualEncoder = gin.REQUIRED,
           checkpoint_path: str = gin.REQUIRED, corpus: str = gin.REQUIRED,
           output_dir: str = gin.REQUIRED, task_feature_lengths: dict = gin.REQUIRED,
           mixture_or_task_name: Optional[str] = None, vocabulary=None,
           dtype: str = "float32", shard_size: int = 100_000, num_partitions: int = 1,
           batch_size: int = 256) -> embedding_shards.EmbeddingShards:
  """Embeds the passages of `corpus` with `model` into `output_dir`.

  Args:
    model, checkpoint_path, task_feature_lengths, mixture_or_task_name, vocabulary,
      num_partitions, batch_size: as `evaluate.evaluate`.
    corpus: ENCODE_CORPUS (see the module docstring).
    output_dir: ENCODE_OUTPUT_DIR.
    dtype: "float32" or "bfloat16", as stored (ENCODE_DTYPE).
    shard_size: rows a shard (ENCODE_SHARD_SIZE).
  """
  vocabulary = embedder.resolve_vocabulary(vocabulary, mixture_or_task_name)
  texts = read_corpus(corpus)
  return embedder.Embedder.from_checkpoint(
      model, checkpoint_path, task_feature_lengths, vocabulary=vocabulary,
      num_partitions=num_partitions, batch_size=batch_size).encode_corpus(
          output_dir, texts, shard_size=shard_size, dtype=dtype)


def main(argv: Optional[Sequence[str]] = None) -> None:
  launch.run_configurable(encode, argv)


if __name__ == "__main__":
  # Run the module's canonical copy, which the gin files bind, not this __main__ copy.
  from samtone_jax import encode as _encode_module  # pylint: disable=g-import-not-at-top
  _encode_module.main()
