r"""Corpus scale: encode and search N passages in host memory that stays flat in N, as
fast as sentence-transformers and faiss, and the per-device memory of the real sizes.

  python benchmarks/corpus_scale.py [--parts runs encode search analyses]
      [--sizes 100000 300000 1000000]

- runs: for each N, in a fresh process, `embedding_shards.encode` of N synthetic passages
  (made on the fly from their index: the corpus is never held) with the quickstart model
  (models/t5_1_1_quickstart.gin, 64 tokens, batch 512) into a temporary directory, then
  `retrieval.sharded_top_k` of 1,000 queries over the shards, 100,000 rows a chunk. Reports
  passages/s of each and the process's peak RSS; the peak at the largest N over that at the
  smallest should stay near 1 (the ids, ~70 bytes a row, are the only part that grows).
- encode: our `embedding_shards.encode` against sentence-transformers' `encode` of the same
  512 texts with an SDE of T5 v1.1 small dimensions (float32, batch 128, 128 tokens: every
  text is longer, so both cut it there), each in a process of its own, interleaved with the
  matmul rate over 3 rounds (`train_throughput.Contender`). MFU = 2 x non-embedding
  parameters x tokens / wall seconds / matmul rate.
- search: top-100 of 1,000 queries over 1M x 768 random unit vectors stored as shards,
  streamed 100,000 rows a chunk, against faiss `IndexFlatIP` holding them all in memory, on
  the same data in one process, interleaved over 3 rounds (the results must agree).
- analyses: from abstract shapes on 8 simulated devices (nothing allocated), the compiled
  memory of one search step over MS MARCO's 8.8M x 768 corpus (6,980 queries, top 1,000,
  1M rows a chunk), and of embedding a batch of 256 passages of 256 tokens with a T5 v1.1
  XXL SDE whose parameters are split over NUM_PARTITIONS = 8.

Needs the `[bench]` extra (faiss, sentence-transformers). Writes
benchmarks/results/corpus_scale.json.
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
  """N passages "p<i>" -> `words` words drawn from the index: a Mapping that holds nothing."""

  def __init__(self, size: int, words: int = 40):
    self.size, self.words = size, words

  def __len__(self):
    return self.size

  def __iter__(self):
    return (f"p{i}" for i in range(self.size))

  def __getitem__(self, doc_id: str) -> str:
    i = int(doc_id[1:])
    return " ".join(WORDS[(i * 7919 + j * 104729) % len(WORDS)] for j in range(self.words))


def quickstart_model():
  """The SDE of models/t5_1_1_quickstart.gin and its random parameters."""
  import jax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from samtone_jax import launch  # pylint: disable=g-import-not-at-top
  model, _ = launch.read_run(["models/t5_1_1_quickstart.gin", "architectures/sde.gin"], [])
  ids = jax.numpy.zeros((1, 64), jax.numpy.int32)
  return model, nn.unbox(model.init(jax.random.key(0), ids, ids))["params"]


def run_one(size: int) -> dict:
  """Encode + search of `size` passages in this process (see the module docstring)."""
  import resource  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from samtone_jax import embedder, embedding_shards, partitioning, retrieval  # pylint: disable=g-import-not-at-top
  from samtone_jax.tasks import vocabularies  # pylint: disable=g-import-not-at-top
  model, params = quickstart_model()
  vocabulary = vocabularies.quickstart_vocabulary()
  mesh = partitioning.create_mesh()
  encode_queries, encode_passages = embedder.encoders(model)
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


def build_jax_encode(size: str, batch: int, length: int, passages: int):
  """A Contender's build: our `embedding_shards.encode` of `passages` synthetic texts (each
  over `length` tokens) with a T5 v1.1 `size` SDE, float32, into a fresh directory, under
  the XLA flags `python -m samtone_jax.encode` sets (`train_throughput.jax_info`)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import train_throughput  # pylint: disable=g-import-not-at-top
  from samtone_jax import embedder, embedding_shards, partitioning, retrieval  # pylint: disable=g-import-not-at-top
  from samtone_jax.tasks import vocabularies  # pylint: disable=g-import-not-at-top
  info = train_throughput.jax_info("float32")
  model = train_throughput.jax_model(size, "float32")
  ids = jax.numpy.zeros((1, length), jax.numpy.int32)
  params = nn.unbox(model.init(jax.random.key(0), ids, ids))["params"]
  info["params"] = train_throughput.jax_non_embedding_params(params)
  mesh, embed = partitioning.create_mesh(), embedder.encoders(model)[1]
  vocabulary, corpus = vocabularies.quickstart_vocabulary(), SyntheticCorpus(passages, length)

  def run():
    with tempfile.TemporaryDirectory() as directory:
      embedding_shards.encode(directory, embed, params, corpus,
                              lambda texts: retrieval.tokenize(texts, vocabulary, length),
                              mesh, batch_size=batch)

  run()
  return lambda: train_throughput.seconds(run), info


def build_torch_encode(size: str, batch: int, length: int, passages: int):
  """A Contender's build: sentence-transformers' `encode` of the same texts with an SDE of
  the same sizes (`train_throughput.st_model`), float32, on the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  import train_throughput  # pylint: disable=g-import-not-at-top
  model = train_throughput.st_model(size, "cpu", max_seq_length=length, words=tuple(WORDS))
  model.eval()
  corpus = SyntheticCorpus(passages, length)
  texts = [corpus[i] for i in corpus]
  tokens = model.tokenize(texts[:1])["input_ids"].shape[1]
  if tokens != length:
    raise AssertionError(f"sentence-transformers cut a text to {tokens} tokens, not {length}")
  run = lambda: model.encode(texts, batch_size=batch, convert_to_numpy=True,
                             show_progress_bar=False)
  run()
  return lambda: train_throughput.seconds(run), {
      "params": train_throughput.torch_non_embedding_params(model),
      "torch": torch.__version__, "threads": torch.get_num_threads()}


def encode_comparison(size: str = "small", batch: int = 128, length: int = 128,
                      passages: int = 512, rounds: int = 3) -> dict:
  """Ours against sentence-transformers' encode, interleaved with the matmul rate."""
  import statistics  # pylint: disable=g-import-not-at-top
  import train_throughput  # pylint: disable=g-import-not-at-top
  shape = dict(size=size, batch=batch, length=length, passages=passages)
  contenders = {"samtone_jax": train_throughput.Contender(build_jax_encode, **shape),
                "sentence_transformers": train_throughput.Contender(build_torch_encode,
                                                                    **shape)}
  params = contenders["samtone_jax"].info["params"]
  if contenders["sentence_transformers"].info["params"] != params:
    raise AssertionError("the models differ: "
                         f"{contenders['sentence_transformers'].info['params']} != {params}")
  rate = train_throughput.Contender(train_throughput.build_rate, dtype="float32")
  times, rates = train_throughput.interleave(contenders, rate, rounds, label="encode round")
  for contender in [*contenders.values(), rate]:
    contender.close()
  flops = 2 * params * passages * length
  rows = {name: {
      "wall_seconds": statistics.median(t[0] for t in measured),
      "passages_per_second": statistics.median(passages / t[0] for t in measured),
      "mfu": statistics.median(flops / t[0] / r[0] for t, r in zip(measured, rates))}
      for name, measured in times.items()}
  rows["sentence_transformers"]["ours_faster"] = statistics.median(
      theirs[0] / ours[0] for theirs, ours in zip(times["sentence_transformers"],
                                                    times["samtone_jax"]))
  return dict(shape, non_embedding_params=params, flops=flops, rows=rows,
              matmul_flops_per_second=statistics.median(r[0] for r in rates),
              measurements=times, matmul_all=rates)


def search_comparison(rows: int = 1_000_000, dim: int = 768, queries: int = 1000,
                      k: int = 100, chunk_rows: int = 100_000, repeats: int = 3) -> dict:
  """Streamed top-k over shards on disk against faiss IndexFlatIP in memory, same data,
  interleaved round by round (time_ratio: the median of the rounds' ratios)."""
  import statistics  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import faiss  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from samtone_jax import embedding_shards, partitioning, retrieval  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(
      rng.normal(size=(n, dim)).astype(np.float32))
  query_vectors = unit(queries)
  mesh = partitioning.create_mesh()
  with tempfile.TemporaryDirectory() as directory:
    path = pathlib.Path(directory)
    (path / embedding_shards.META).write_text(json.dumps(
        {"rows": rows, "dim": dim, "dtype": "float32", "shard_size": chunk_rows}))
    for shard, start in enumerate(range(0, rows, chunk_rows)):  # as `encode` writes them
      count = min(chunk_rows, rows - start)
      embedding_shards._write_shard(path, shard, [f"d{i}" for i in range(start, start + count)],  # pylint: disable=protected-access
                                    unit(count))
    shards = embedding_shards.EmbeddingShards(path)
    index = faiss.IndexFlatIP(dim)
    for start in range(0, rows, chunk_rows):
      index.add(shards[start:start + chunk_rows])
    ours, theirs, times = {}, {}, {"samtone_jax": [], "faiss": []}
    searches = {"samtone_jax": lambda: ours.update(zip(("scores", "ids"), retrieval.sharded_top_k(
                    mesh, query_vectors, shards, k=k, chunk_rows=chunk_rows))),
                "faiss": lambda: theirs.update(zip(("scores", "ids"), index.search(
                    query_vectors, k)))}
    for round_ in range(repeats + 1):  # round 0 warms up (compilation, page cache)
      for name, search in searches.items():
        start = time.perf_counter()
        search()
        if round_:
          times[name].append(time.perf_counter() - start)
  ours_s, faiss_s = (statistics.median(times[name]) for name in searches)
  return {"rows": rows, "dim": dim, "queries": queries, "k": k, "chunk_rows": chunk_rows,
          "samtone_jax_seconds": ours_s, "faiss_seconds": faiss_s, "seconds": times,
          "time_ratio": statistics.median(a / b for a, b in zip(*times.values())),
          "block_size": retrieval.BLOCK_SIZE, "faiss": faiss.__version__,
          "same_ids_fraction": float(np.mean(ours["ids"] == theirs["ids"])),
          "max_score_difference": float(np.max(np.abs(ours["scores"] - theirs["scores"])))}


def memory_analyses() -> dict:
  """Compiled per-device memory (bytes) of the real sizes, from abstract shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  from samtone_jax import embedder, launch, partitioning, retrieval  # pylint: disable=g-import-not-at-top

  def analysis(compiled) -> dict:
    memory = compiled.memory_analysis()
    return {name: int(getattr(memory, f"{name}_size_in_bytes"))
            for name in ("argument", "output", "temp", "generated_code")}

  out = {}
  mesh = partitioning.create_mesh()
  queries, k, chunk, dim = 6980, 1000, 1_000_000, 768
  block, rows = retrieval.chunk_layout(chunk, mesh.shape["data"], retrieval.BLOCK_SIZE)
  step = retrieval._chunk_step(mesh, ("data",), k, k, block, rows)  # pylint: disable=protected-access
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
  encode_passages = embedder.encoders(model)[1]
  compiled = jax.jit(encode_passages).lower(
      params, jax.ShapeDtypeStruct((256, 256), jnp.int32, sharding=NamedSharding(
          mesh, PartitionSpec("data")))).compile()
  count = sum(x.size for x in jax.tree.leaves(params))
  out["xxl_sde_encode"] = dict(analysis(compiled), parameters=int(count), num_partitions=8,
                               devices=mesh.size, batch=256, length=256)
  return out


PARTS = ("runs", "encode", "search", "analyses")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
  parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
  parser.add_argument("--child", help=argparse.SUPPRESS)  # a child's part: "run=N", ...
  parser.add_argument("--out", type=pathlib.Path,
                      default=ROOT / "benchmarks" / "results" / "corpus_scale.json")
  args = parser.parse_args()
  if args.child:
    part, _, size = args.child.partition("=")
    print(json.dumps({"run": lambda: run_one(int(size)), "search": search_comparison,
                      "analyses": memory_analyses}[part]()))
    return
  # Each part in a fresh process (the parent starts no JAX backend): a peak RSS is its own.
  child = lambda part, devices=1: json.loads(subprocess.run(
      [sys.executable, __file__, f"--child={part}"], cwd=ROOT, check=True,
      stdout=subprocess.PIPE, text=True,
      env=dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  ).stdout.splitlines()[-1])
  results = {"machine": _common.machine(devices=False)}
  if "runs" in args.parts:
    results["runs"] = []
    for size in args.sizes:
      results["runs"].append(child(f"run={size}"))
      print(json.dumps(results["runs"][-1]), flush=True)
    peaks = [r["peak_rss_mib"] for r in results["runs"]]
    results["peak_rss_largest_over_smallest"] = peaks[-1] / peaks[0]
  if "encode" in args.parts:
    results["encode"] = encode_comparison()
    print(json.dumps(results["encode"]["rows"], indent=2), flush=True)
  if "search" in args.parts:
    results["search"] = child("search")
    print(json.dumps(results["search"], indent=2), flush=True)
  if "analyses" in args.parts:
    results["memory_analyses"] = child("analyses", devices=8)
    print(json.dumps(results["memory_analyses"], indent=2))
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(results, indent=2))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
