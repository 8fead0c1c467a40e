"""Input pipeline throughput against the examples a training step consumes.

Measures, in one process on this machine:
- tokenised, batched examples per second of the quickstart task (`stdlib_code_search`) and
  of an MS MARCO-shaped fixture scaled to 100k pairs (collection.tsv, queries.train.tsv and
  qrels.train.tsv written in the official formats, built by the `msmarco_passage` builder);
- examples per second of one training step (value and gradient of the SamToNe loss through
  the tiny dual encoder of `models/t5_1_1_tiny.gin`, batch and lengths as below);
and reports their ratio (checked: at least 10, so that the input is never the bottleneck).

  python benchmarks/input_pipeline.py [--batch 64] [--batches 200]

Writes benchmarks/results/input_pipeline.json. Both pipelines use the quickstart's
SentencePiece model (T5's is not on this machine).
"""

import argparse
import json
import os
import pathlib
import random
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import seqio

import samtone_jax.tasks  # pylint: disable=unused-import
from samtone_jax import data_files, inputs, launch, losses
from samtone_jax.tasks import pairs, vocabularies

import _common  # pylint: disable=g-bad-import-order  (this folder)

LENGTHS = {"queries": 64, "passages": 256}
WORDS = ("retrieval dense passage query model training negative batch encoder tower "
         "similarity contrastive temperature softmax embedding vector corpus index search "
         "document answer question sentence token vocabulary").split()


def write_msmarco_fixture(folder: pathlib.Path, pairs_count: int, seed: int = 0) -> None:
  """collection.tsv, queries.train.tsv, qrels.train.tsv with MS MARCO's shapes: ~60-word
  passages, ~6-word queries, non-contiguous ids, one positive a query."""
  rng = random.Random(seed)
  folder.mkdir(parents=True, exist_ok=True)
  text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))
  with open(folder / "collection.tsv", "w", encoding="utf-8") as c, \
       open(folder / "queries.train.tsv", "w", encoding="utf-8") as q, \
       open(folder / "qrels.train.tsv", "w", encoding="utf-8") as r:
    for i in range(pairs_count):
      c.write(f"{3 * i + 7}\t{text(rng.randint(40, 80))}\n")
      q.write(f"{5 * i + 2}\t{text(rng.randint(4, 9))}\n")
      r.write(f"{5 * i + 2}\t0\t{3 * i + 7}\t1\n")


def pipeline_rate(task: str, batch: int, batches: int) -> float:
  """Examples per second of `batches` batches, after a first one (start-up) is taken."""
  iterator = iter(inputs.get_dataset(task, "train", LENGTHS, batch, seed=0).as_numpy_iterator())
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch / (time.perf_counter() - start)


def train_step_rate(batch: int, repeats: int = 10) -> float:
  """Examples per second of value-and-gradient of the loss through the quickstart model."""
  model, _ = launch.read_run(["models/t5_1_1_tiny.gin"], [])
  rng = np.random.default_rng(0)
  vocab = model.config.vocab_size
  queries = jnp.asarray(rng.integers(3, vocab, (batch, LENGTHS["queries"])), jnp.int32)
  passages = jnp.asarray(rng.integers(3, vocab, (batch, LENGTHS["passages"])), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), queries, passages))["params"]

  @jax.jit
  def step(params, queries, passages):
    def loss(params):
      out = model.apply({"params": params}, queries, passages)
      return losses.contrastive_loss(out["query"], out["passage"], same_tower="query")[0]
    return jax.value_and_grad(loss)(params)

  return batch / _common.time_calls(lambda: step(params, queries, passages), repeats)


def main():
  launch.setup_host()
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--msmarco_pairs", type=int, default=100_000)
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"
                                           / "input_pipeline.json"))
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    os.environ[data_files.DATA_DIR_VARIABLE] = str(tmp / "downloads")
    seqio.set_tfds_data_dir_override(str(tmp / "tfds"))
    write_msmarco_fixture(tmp / "downloads" / "msmarco", args.msmarco_pairs)
    pairs.register_pairs_task("msmarco_passage", "msmarco_passage/qrels:1.0.0",
                              vocabularies.quickstart_vocabulary())
    start = time.perf_counter()
    inputs.prepare("msmarco_passage")
    inputs.prepare("stdlib_code_search")
    build_seconds = time.perf_counter() - start
    rates = {task: pipeline_rate(task, args.batch, args.batches)
             for task in ("stdlib_code_search", "msmarco_passage")}
  step = train_step_rate(args.batch)

  print(f"batch {args.batch}, lengths {LENGTHS}, {os.cpu_count()} cores;"
        f" TFDS builds took {build_seconds:.0f} s")
  print(f"{'':32} {'examples/s':>12} {'/ train step':>14}")
  for task, rate in rates.items():
    print(f"{'input: ' + task:32} {rate:12.0f} {rate / step:14.1f}")
  print(f"{'train step (t5_1_1_tiny, SamToNe)':32} {step:12.0f}")
  worst = min(rates.values()) / step
  print(f"target: input >= 10x the train step: {'met' if worst >= 10 else 'NOT met'}"
        f" ({worst:.1f}x)")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "benchmark": "input_pipeline", "batch": args.batch, "lengths": LENGTHS,
      "input_examples_per_second": rates, "train_step_examples_per_second": step,
      "min_ratio": worst, "target_met": worst >= 10, "machine": _common.machine()},
      indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
