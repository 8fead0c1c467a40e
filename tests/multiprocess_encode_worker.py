"""One process of the two-process encode-and-search test (tests/test_embedding_shards.py).

Run as `python -m tests.multiprocess_encode_worker --process_id=I --port=P --out=DIR`: joins
a 2-process JAX cluster on 127.0.0.1 (gloo CPU collectives, 2 simulated devices a process),
embeds CORPUS into DIR/shards (each process its own shards) and searches them a chunk at a
time; writes the top-k to DIR/process<I>.npz.
"""

import argparse
import pathlib

import numpy as np

from tests import cluster

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "iris", "jam"]
CORPUS = {f"d{i}": f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} {i}" for i in range(23)}
SEARCH = dict(k=6, block_size=2, chunk_rows=7)


def embed(params, ids):
  """Counts of byte values times a [260, 6] matrix: a stand-in for the encoder."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.nn.one_hot(ids, 260).sum(axis=1) @ params["w"]


def params():
  return {"w": np.random.default_rng(0).normal(size=(260, 6)).astype(np.float32)}


def tokenize(texts):
  import seqio  # pylint: disable=g-import-not-at-top
  from samtone_jax import retrieval  # pylint: disable=g-import-not-at-top
  return retrieval.tokenize(texts, seqio.ByteVocabulary(), 16)


def queries():
  return np.asarray(embed(params(), tokenize(list(CORPUS.values())[:5]))) + 0.01


def encode_and_search(directory, mesh):
  """(shards, scores, indices): CORPUS embedded into `directory` and searched."""
  from samtone_jax import embedding_shards, retrieval  # pylint: disable=g-import-not-at-top
  shards = embedding_shards.encode(directory, embed, params(), CORPUS, tokenize, mesh,
                                   batch_size=8, shard_size=5,
                                   source={"encoder": "toy"})
  return (shards, *retrieval.sharded_top_k(mesh, queries(), shards, **SEARCH))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()

  jax = cluster.join(args.process_id, args.port, NUM_PROCESSES, DEVICES_PER_PROCESS)
  from samtone_jax import partitioning  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == NUM_PROCESSES * DEVICES_PER_PROCESS, jax.devices()
  out = pathlib.Path(args.out)
  _, scores, indices = encode_and_search(out / "shards", partitioning.create_mesh())
  np.savez(out / f"process{args.process_id}.npz", scores=scores, indices=indices)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
