r"""Corpus scale: encode and search N synthetic passages in memory that stays flat in N, and
the per-device memory of the real sizes from compiler analyses.

  python benchmarks/corpus_scale.py [--sizes 100000 300000 1000000] [--skip_runs]

1. For each N, in a fresh process: `embedding_shards.encode` of N synthetic passages (made
   on the fly from their index: the corpus is never held) with the tiny model
   (models/t5_1_1_tiny.gin, 64 tokens) into a temporary directory, then
   `retrieval.sharded_top_k` of 1,000 queries over the shards, 100,000 rows a chunk. Reports
   passages/s of each and the process's peak RSS; the peak at the largest N over that at the
   smallest should stay near 1 (the ids, 70 bytes a row, are the only part that grows).
2. From abstract shapes on 8 simulated devices (nothing allocated): the compiled memory of
   one search step over MS MARCO's 8.8M x 768 corpus (6,980 queries, top 1,000, 1M rows a
   chunk), and of embedding a batch of 256 passages of 256 tokens with a T5 v1.1 XXL SDE
   whose parameters are split over NUM_PARTITIONS = 8.

Writes benchmarks/results/corpus_scale.json.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import _common

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(400)]


class SyntheticCorpus:
  """N passages "p<i>" -> 40 words drawn from the index: a Mapping that holds nothing."""

  def __init__(self, size: int):
    self.size = size

  def __len__(self):
    return self.size

  def __iter__(self):
    return (f"p{i}" for i in range(self.size))

  def __getitem__(self, doc_id: str) -> str:
    i = int(doc_id[1:])
    return " ".join(WORDS[(i * 7919 + j * 104729) % len(WORDS)] for j in range(40))


def _model():
  """The tiny SDE of models/t5_1_1_tiny.gin and its random parameters."""
  import jax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from samtone_jax import launch  # pylint: disable=g-import-not-at-top
  model, _ = launch.read_run(["models/t5_1_1_tiny.gin", "architectures/sde.gin"], [])
  ids = jax.numpy.zeros((1, 64), jax.numpy.int32)
  return model, nn.unbox(model.init(jax.random.key(0), ids, ids))["params"]


def run_one(size: int) -> dict:
  """Encode + search of `size` passages in this process (see the module docstring)."""
  import resource  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from samtone_jax import embedding_shards, partitioning, retrieval, run_dir  # pylint: disable=g-import-not-at-top
  from samtone_jax.tasks import vocabularies  # pylint: disable=g-import-not-at-top
  model, params = _model()
  vocabulary = vocabularies.quickstart_vocabulary()
  mesh = partitioning.create_mesh()
  encode_queries, encode_passages = run_dir.encoders(model)
  corpus = SyntheticCorpus(size)
  with tempfile.TemporaryDirectory() as directory:
    start = time.perf_counter()
    shards = embedding_shards.encode(
        directory, encode_passages, params, corpus,
        lambda texts: retrieval.tokenize(texts, vocabulary, 64), mesh, batch_size=512)
    encode_s = time.perf_counter() - start
    queries = retrieval.encode(encode_queries, params, retrieval.tokenize(
        [corpus[f"p{i}"][:60] for i in range(1000)], vocabulary, 64), mesh, 512)
    start = time.perf_counter()
    retrieval.sharded_top_k(mesh, queries, shards, k=100, chunk_rows=100_000)
    search_s = time.perf_counter() - start
  return {"passages": size, "encode_s": encode_s, "encode_passages_per_s": size / encode_s,
          "search_s": search_s, "search_passages_per_s": size / search_s,
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "dim": int(np.asarray(queries).shape[1])}


def memory_analyses() -> dict:
  """Compiled per-device memory (bytes) of the real sizes, from abstract shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  from samtone_jax import launch, partitioning, retrieval, run_dir  # pylint: disable=g-import-not-at-top

  def analysis(compiled) -> dict:
    memory = compiled.memory_analysis()
    return {name: int(getattr(memory, f"{name}_size_in_bytes"))
            for name in ("argument", "output", "temp", "generated_code")}

  out = {}
  mesh = partitioning.create_mesh()
  queries, k, chunk, dim = 6980, 1000, 1_000_000, 768
  rows = -(-chunk // mesh.shape["data"] // 4096) * 4096  # as sharded_top_k pads a chunk
  step = retrieval._chunk_step(mesh, ("data",), k, k, 4096, rows)  # pylint: disable=protected-access
  replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
  shape = lambda s, dtype, sharding: jax.ShapeDtypeStruct(s, dtype, sharding=sharding)
  out["search_step_msmarco"] = dict(analysis(step.lower(
      shape((queries, dim), jnp.float32, replicated), shape((rows * mesh.size, dim), jnp.float32, split),
      shape((rows * mesh.size,), jnp.bool_, split), shape((), jnp.int32, replicated),
      shape((queries, k), jnp.float32, replicated),
      shape((queries, k), jnp.int32, replicated)).compile()),
      corpus=8_841_823, queries=queries, k=k, chunk_rows=chunk, devices=mesh.size)

  model, _ = launch.read_run(["models/t5_1_1_xxl.gin", "architectures/sde.gin"], [])
  mesh = partitioning.create_mesh(8)
  tokens = jax.ShapeDtypeStruct((256, 256), jnp.int32)
  boxed = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)["params"]
  shardings = partitioning.logical_shardings(boxed, mesh,
                                             partitioning.standard_logical_axis_rules())
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        jax.tree.map(lambda b: b.value, boxed,
                                     is_leaf=lambda b: hasattr(b, "value")), shardings)
  encode_passages = run_dir.encoders(model)[1]
  compiled = jax.jit(encode_passages).lower(
      params, jax.ShapeDtypeStruct((256, 256), jnp.int32, sharding=NamedSharding(
          mesh, PartitionSpec("data")))).compile()
  count = sum(x.size for x in jax.tree.leaves(params))
  out["xxl_sde_encode"] = dict(analysis(compiled), parameters=int(count), num_partitions=8,
                               devices=mesh.size, batch=256, length=256)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
  parser.add_argument("--skip_runs", action="store_true", help="only the memory analyses")
  parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child's size
  parser.add_argument("--analyses", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--out", type=pathlib.Path,
                      default=ROOT / "benchmarks" / "results" / "corpus_scale.json")
  args = parser.parse_args()
  if args.one or args.analyses:
    print(json.dumps(run_one(args.one) if args.one else memory_analyses()))
    return
  child = lambda *flags, devices: json.loads(subprocess.run(
      [sys.executable, __file__, *flags], cwd=ROOT, check=True, capture_output=True, text=True,
      env=dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  ).stdout.splitlines()[-1])
  results = {"machine": _common.machine(devices=False)}
  if not args.skip_runs:
    results["runs"] = []
    for size in args.sizes:
      results["runs"].append(child(f"--one={size}", devices=1))
      print(json.dumps(results["runs"][-1]))
    peaks = [r["peak_rss_mib"] for r in results["runs"]]
    results["peak_rss_largest_over_smallest"] = peaks[-1] / peaks[0]
  results["memory_analyses"] = child("--analyses", devices=8)
  print(json.dumps(results["memory_analyses"], indent=2))
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
