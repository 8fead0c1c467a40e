r"""Mining scale: `mine.mine` at two sizes 10x apart, dense and BM25, each in a fresh
process: wall time and peak RSS, and the mined negatives against an in-memory run.

  python benchmarks/mining_scale.py [--parts dense bm25]
      [--sizes 10000x100000 100000x1000000] [--out PATH]

- Data, for each size QxN (queries x passages): N synthetic passages of 40 words drawn
  (Zipf, a = 1.3) from 20,000, made a block at a time from a seed (never held whole), and Q
  queries, query i being 6 words of passage i, its one positive. The Q pairs are written as
  an own-data pairs.jsonl and the other N - Q passages as a BEIR corpus.jsonl
  (MINE_CORPUS_FILES), into a temporary directory: the files are streamed out, so this
  parent holds no corpus, and the mining process holds what `mine` holds.
- dense: MINE_TOP_N 30 with the quickstart model (models/t5_1_1_quickstart.gin, an SDE of
  random parameters saved as a training run's checkpoint), 64 tokens, batch 512, shards of
  SHARD_SIZE rows searched --chunk_rows documents and --query_batch queries at a time.
- bm25: MINE_TOP_N 30 with BM25, the corpus analysed `bm25.ANALYSIS_BATCH` texts and the
  queries searched --query_batch at a time; and, in a process of its own, `bm25.index` of
  the corpus and `bm25.retrieve` of the queries (k = MINE_TOP_N + 1) alone ("bm25_index":
  the seconds of each, the RSS once the texts are read, the index's arrays' size (its
  vocabulary not counted), the peak RSS of indexing and of the whole).
- At the smallest size each mining part is run again as an in-memory run (dense: chunk_rows
  >= N and query_batch >= Q, over the same shards; bm25: the whole corpus one analysis
  batch, the queries one batch), and "identical" says whether every pair's negatives are
  the same.

Reports each run's wall seconds (data writing excluded) and peak RSS, and
"dense_peak_rss_ratio": the dense run's peak RSS at the largest size over the smallest's
(bounded memory: at most 1.3). Writes benchmarks/results/mining_scale.json.

Duration of the default sizes on 2 CPU cores: about 1.6 hours, estimated from small runs'
rates on such a machine (shared): dense ~45 minutes (embedding 1.2M texts at ~800 a second,
searching 1e11 query-passage pairs at ~9e7 a second), BM25 ~50 minutes (indexing ~9,500
passages a second, retrieving ~8e7 query-passage pairs a second, in the mining run and
again in the bm25_index run). The progress is printed with each run's time. A smoke run,
about a minute: `python benchmarks/mining_scale.py --sizes 50x500 --chunk_rows 128
--query_batch 16 --out /tmp/mining_scale.json`.
"""

import argparse
import importlib
import json
import logging
import pathlib
import subprocess
import sys
import tempfile
import time

import _common

ROOT = pathlib.Path(__file__).resolve().parents[1]
VOCAB, WORDS, QUERY_WORDS, BLOCK = 20_000, 40, 6, 10_000
TOP_N, LENGTH, BATCH, SHARD_SIZE = 30, 64, 512, 100_000


def passages(start: int, stop: int) -> list[list[str]]:
  """Passages [start, stop) as their words: block b's from the generator seeded (0, b), so
  that any passage is made the same way whatever the size."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = []
  for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
    ids = np.random.default_rng((0, block)).zipf(1.3, size=(BLOCK, WORDS)) % VOCAB
    first = block * BLOCK
    out += [[f"w{w}" for w in row] for row in ids[max(start - first, 0):stop - first]]
  return out


def write_data(directory: pathlib.Path, queries: int, size: int) -> tuple[str, str]:
  """(pairs.jsonl, corpus.jsonl) of `queries` x `size` in `directory` (module docstring)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  pairs, corpus = directory / "pairs.jsonl", directory / "corpus.jsonl"
  rng = np.random.default_rng(1)
  with open(pairs, "w", encoding="utf-8") as p, open(corpus, "w", encoding="utf-8") as c:
    for start in range(0, size, BLOCK):
      for i, words in enumerate(passages(start, min(start + BLOCK, size)), start):
        text = " ".join(words)
        if i < queries:
          query = " ".join(words[j] for j in sorted(rng.choice(WORDS, QUERY_WORDS, False)))
          p.write(json.dumps({"query": query, "passage": text}) + "\n")
        else:
          c.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
  return str(pairs), str(corpus)


def save_checkpoint(directory: pathlib.Path) -> None:
  """The quickstart SDE's random parameters as step 1 of a training run in `directory`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  import corpus_scale  # pylint: disable=g-import-not-at-top
  _, params = corpus_scale.quickstart_model()
  manager = ocp.CheckpointManager(directory.absolute() / "checkpoints")
  manager.save(1, args=ocp.args.StandardSave({"params": params, "step": 1}))
  manager.wait_until_finished()


def _rss_mib() -> float:
  """This process's resident memory now (VmRSS), MiB."""
  with open("/proc/self/status", encoding="ascii") as f:
    return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _peak_rss_mib() -> float:
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bm25_index(data: pathlib.Path, query_batch: int) -> dict:
  """`bm25.index` of the corpus that `mine` searches (the pairs' passages, then the BEIR
  corpus) and `bm25.retrieve` of the pairs' queries, timed apart, in this process."""
  importlib.import_module("bm25s")  # its import (JAX's backend) counts before the texts
  from samtone_jax import beir_format, bm25, pairs_format  # pylint: disable=g-import-not-at-top
  pairs = list(pairs_format.read_examples(str(data / "pairs.jsonl")))
  corpus = [pair["passage"] for pair in pairs]
  corpus += beir_format.read_corpus(str(data / "corpus.jsonl")).values()
  queries = [pair["query"] for pair in pairs]
  del pairs
  texts_mib = _rss_mib()
  start = time.perf_counter()
  index = bm25.index(corpus)
  index_seconds, index_peak = time.perf_counter() - start, _peak_rss_mib()
  index_mib = sum(part.nbytes for part in index.scores.values()
                  if hasattr(part, "nbytes")) / 2**20
  start = time.perf_counter()
  bm25.retrieve(index, queries, TOP_N + 1, query_batch)
  return dict(method="bm25_index", in_memory=False, passages=len(corpus),
              queries=len(queries), analysis_batch=bm25.ANALYSIS_BATCH,
              query_batch=query_batch, texts_rss_mib=texts_mib, index_seconds=index_seconds,
              index_mib=index_mib, index_peak_rss_mib=index_peak,
              search_seconds=time.perf_counter() - start,
              seconds=index_seconds + time.perf_counter() - start,
              peak_rss_mib=_peak_rss_mib())


def mine_one(method: str, data: pathlib.Path, out: str, in_memory: bool, chunk_rows: int,
             query_batch: int) -> dict:
  """One `mine.mine` run over the files in `data`, in this process (module docstring); a
  dense one first saves the checkpoint in data/run where none is (not timed)."""
  import gin  # pylint: disable=g-import-not-at-top
  from samtone_jax import bm25, mine  # pylint: disable=g-import-not-at-top
  sizes = json.loads((data / "sizes.json").read_text())
  files = dict(input_files=[str(data / "pairs.jsonl")],
               corpus_files=[str(data / "corpus.jsonl")], output_file=out, top_n=TOP_N)
  if method == "dense" and not (data / "run").exists():
    save_checkpoint(data / "run")
  start = time.perf_counter()
  if method == "bm25":
    if in_memory:
      gin.bind_parameter("bm25.search.analysis_batch", sizes["passages"])
    options = {"analysis_batch": sizes["passages"] if in_memory else bm25.ANALYSIS_BATCH,
               "query_batch": sizes["queries"] if in_memory else query_batch}
    counts = mine.mine(method="bm25", query_batch=options["query_batch"], **files)
  else:
    from samtone_jax import launch  # pylint: disable=g-import-not-at-top
    from samtone_jax.tasks import vocabularies  # pylint: disable=g-import-not-at-top
    model, _ = launch.read_run(["models/t5_1_1_quickstart.gin", "architectures/sde.gin"], [])
    options = dict(chunk_rows=sizes["passages"] if in_memory else chunk_rows,
                   query_batch=sizes["queries"] if in_memory else query_batch)
    counts = mine.mine(method="dense", model=model, checkpoint_path=str(data / "run"),
                       task_feature_lengths={"queries": LENGTH, "passages": LENGTH},
                       vocabulary=vocabularies.quickstart_vocabulary(), batch_size=BATCH,
                       embeddings_dir=str(data / "embeddings"), shard_size=SHARD_SIZE,
                       **options, **files)
  return dict(counts, method=method, in_memory=in_memory, **options,
              seconds=time.perf_counter() - start, peak_rss_mib=_peak_rss_mib())


def same_negatives(a: str, b: str) -> bool:
  """Whether two mined files give every pair the same negatives."""
  with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
    return all(json.loads(x)["negatives"] == json.loads(y)["negatives"]
               for x, y in zip(fa, fb, strict=True))


def size_pair(text: str) -> tuple[int, int]:
  queries, _, passages_ = text.partition("x")
  if not (queries.isdigit() and passages_.isdigit() and 0 < int(queries) <= int(passages_)):
    raise argparse.ArgumentTypeError(f"{text!r}: want QUERIESxPASSAGES, 0 < QUERIES <= PASSAGES")
  return int(queries), int(passages_)


PARTS = ("dense", "bm25")


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
  parser.add_argument("--sizes", type=size_pair, nargs="+",
                      default=[(10_000, 100_000), (100_000, 1_000_000)],
                      help="QUERIESxPASSAGES, smallest first (default: 10000x100000"
                           " 100000x1000000)")
  parser.add_argument("--chunk_rows", type=int, default=20_000,
                      help="documents searched at a time by the dense runs")
  parser.add_argument("--query_batch", type=int, default=1024,
                      help="queries searched at a time by the dense and BM25 runs")
  parser.add_argument("--out", type=pathlib.Path,
                      default=ROOT / "benchmarks" / "results" / "mining_scale.json")
  parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # method, data, out
  parser.add_argument("--in_memory", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    method, data, out = args.child
    logging.basicConfig(format="  %(asctime)s %(name)s: %(message)s")
    logging.getLogger("samtone_jax").setLevel(logging.INFO)  # the progress
    print(json.dumps(bm25_index(pathlib.Path(data), args.query_batch) if method == "bm25_index"
                     else mine_one(method, pathlib.Path(data), out, args.in_memory,
                                   args.chunk_rows, args.query_batch)))
    return

  def child(method, data, out, in_memory=False):  # a fresh process: its peak RSS is its own
    command = [sys.executable, __file__, "--child", method, str(data), out,
               f"--chunk_rows={args.chunk_rows}", f"--query_batch={args.query_batch}"]
    return json.loads(subprocess.run(command + ["--in_memory"] * in_memory, cwd=ROOT,
                                     check=True, stdout=subprocess.PIPE, text=True
                                     ).stdout.splitlines()[-1])

  results = {"machine": _common.machine(devices=False), "top_n": TOP_N, "length": LENGTH,
             "chunk_rows": args.chunk_rows, "query_batch": args.query_batch, "runs": []}
  began = time.perf_counter()
  for number, (queries, size) in enumerate(args.sizes):
    with tempfile.TemporaryDirectory() as directory:
      data = pathlib.Path(directory)
      start = time.perf_counter()
      write_data(data, queries, size)
      (data / "sizes.json").write_text(json.dumps({"queries": queries, "passages": size}))
      print(f"{queries}x{size}: data written in {time.perf_counter() - start:.0f} s",
            flush=True)
      for method in args.parts:
        runs = [False, True] if number == 0 else [False]
        for in_memory in runs:
          out = str(data / f"{method}{'.in_memory' * in_memory}.jsonl")
          print(f"{queries}x{size} {method}{' in memory' * in_memory}: mining"
                f" ({time.perf_counter() - began:.0f} s into the benchmark)", flush=True)
          run = dict(child(method, data, out, in_memory), size=f"{queries}x{size}")
          if in_memory:
            run["identical"] = same_negatives(str(data / f"{method}.jsonl"), out)
          results["runs"].append(run)
          print(f"  {run['seconds']:.1f} s, peak RSS {run['peak_rss_mib']:.0f} MiB"
                + (f", identical: {run['identical']}" if in_memory else ""), flush=True)
      if "bm25" in args.parts:
        run = dict(child("bm25_index", data, ""), size=f"{queries}x{size}")
        results["runs"].append(run)
        print(f"{queries}x{size} bm25 index: {run['index_seconds']:.1f} s, arrays of"
              f" {run['index_mib']:.0f} MiB (peak {run['index_peak_rss_mib']:.0f} MiB);"
              f" search {run['search_seconds']:.1f} s; peak RSS {run['peak_rss_mib']:.0f} MiB",
              flush=True)
  streamed = lambda method: [r for r in results["runs"]
                             if r["method"] == method and not r["in_memory"]]
  for method in args.parts:
    results[f"{method}_identical"] = all(r["identical"] for r in results["runs"]
                                         if r["method"] == method and r["in_memory"])
  if "dense" in args.parts:
    peaks = [r["peak_rss_mib"] for r in streamed("dense")]
    results["dense_peak_rss_ratio"] = peaks[-1] / peaks[0]
  results["total_seconds"] = time.perf_counter() - began
  print(f"{'size':>16} {'method':>10} {'in memory':>9} {'seconds':>9} {'peak MiB':>9}")
  for run in results["runs"]:
    print(f"{run['size']:>16} {run['method']:>10} {str(run['in_memory']):>9}"
          f" {run['seconds']:>9.1f} {run['peak_rss_mib']:>9.0f}")
  print({k: v for k, v in results.items() if k.endswith(("_identical", "_ratio"))})
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(results, indent=2))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
