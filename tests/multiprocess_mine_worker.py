"""One process of the two-process dense mining test (tests/test_mine.py).

Run as `python -m tests.multiprocess_mine_worker --process_id=I --port=P --run=RUN
--out=DIR`: joins a 2-process JAX cluster on 127.0.0.1 (gloo CPU collectives, 2 simulated
devices a process) and mines DIR/pairs.jsonl against DIR/corpus.jsonl with the tiny model
at RUN (tests/conftest.py's `tiny_run`) into DIR/mined.jsonl, the corpus embedded into
DIR/mined.jsonl.embeddings (each process its own shards).
"""

import argparse
import pathlib

from tests import cluster

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2


def mine_files(folder: pathlib.Path, run: pathlib.Path, output: pathlib.Path) -> dict:
  """Mines folder's pairs.jsonl against its corpus.jsonl into `output`: 5 negatives a pair,
  margin 0.02, 10 rows a shard, 7 documents and 3 queries searched at a time."""
  import seqio  # pylint: disable=g-import-not-at-top
  from samtone_jax import mine  # pylint: disable=g-import-not-at-top
  from tests import conftest  # pylint: disable=g-import-not-at-top
  model, lengths = conftest.tiny_model()
  return mine.mine(input_files=[str(folder / "pairs.jsonl")],
                   corpus_files=[str(folder / "corpus.jsonl")], output_file=str(output),
                   model=model, checkpoint_path=str(run), task_feature_lengths=lengths,
                   vocabulary=seqio.ByteVocabulary(), batch_size=8, shard_size=10,
                   chunk_rows=7, query_batch=3, top_n=5, margin=0.02)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--run", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()

  jax = cluster.join(args.process_id, args.port, NUM_PROCESSES, DEVICES_PER_PROCESS)
  assert jax.device_count() == NUM_PROCESSES * DEVICES_PER_PROCESS, jax.devices()
  out = pathlib.Path(args.out)
  mine_files(out, pathlib.Path(args.run), out / "mined.jsonl")
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
