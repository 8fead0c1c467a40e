r"""The paper's comparisons, small: rerun on the embedded code-search set on any CPU.

  python benchmarks/replicate.py --out=/tmp/samtone_replication [--seeds=3] [--workers=2]

Trains from scratch, with experiments/replication.gin (a T5 v1.1-shaped model of 2 layers,
d_model 64; 400 steps of batch 64; passages of 64 tokens):
- the table: SDE, ADE and ADE-SPL x {in-batch softmax, SamToNe (query side), SamToNe (both
  towers), PAIR}, `--seeds` seeds each, on `stdlib_code_search`; P@1, MRR and Recall@10 of
  the held-out test queries against the whole pool of test functions, as mean and standard
  deviation over the seeds;
- Section 3.4: ADE-SPL x {in-batch softmax, document-side SamToNe} x {duplicate masking off,
  on} on `stdlib_code_search_sentences`, where each function comes with several docstring
  sentences (few unique passages), scored on the same test set and on the variant's own
  (`stdlib_code_search_sentences_test`);
- the analysis figures (samtone_jax.analysis) of ADE-SPL, in-batch softmax against SamToNe,
  seed 0.

Each run is a training MODEL_DIR under --out. A run with a metrics.json is done and is
skipped; an interrupted one resumes from its checkpoint: after a crash, rerun the command.
`--workers` runs go in parallel, each on one CPU thread (on 2 cores, two one-thread runs
do more than one run on both). Writes OUT/replication.json, OUT/replication.md (docs/replication.md's
tables) and OUT/figures/.
"""

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Optional

import _common  # pylint: disable=g-bad-import-order  (this folder)

ARCHITECTURES = ("sde", "ade", "ade_spl")
LOSSES = {"in_batch_softmax": "in-batch softmax", "samtone": "SamToNe (query)",
          "samtone_both": "SamToNe (both)", "pair": "PAIR"}
SECTION_3_4_LOSSES = {"in_batch_softmax": "in-batch softmax",
                      "samtone_document": "SamToNe (document)"}
EVAL_SET = "stdlib_code_search_test"
METRICS = ("P@1", "MRR", "Recall@10")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: gin files after experiments/replication.gin, and bindings."""
  name: str
  architecture: str
  loss: str
  seed: int
  task: str = "stdlib_code_search"
  mask_duplicates: bool = False

  def gin_args(self, model_dir: pathlib.Path,
               extra: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    files = ["experiments/replication.gin", f"architectures/{self.architecture}.gin",
             f"losses/{self.loss}.gin"]
    bindings = [f"SEED = {self.seed}", f"MODEL_DIR = '{model_dir}'",
                f"MIXTURE_OR_TASK_NAME = '{self.task}'",
                f"MASK_DUPLICATES = {self.mask_duplicates}", *extra]
    return files, bindings


def grid(seeds: int) -> list[Run]:
  """The table's runs seed by seed (a partial table has whole seeds), then Section 3.4's."""
  runs = [Run(f"{a}_{l}_seed{s}", a, l, s)
          for s in range(seeds) for a in ARCHITECTURES for l in LOSSES]
  runs += [Run(f"s34_{l}_{'masked' if m else 'unmasked'}_seed{s}", "ade_spl", l, s,
               task="stdlib_code_search_sentences", mask_duplicates=m)
           for s in range(seeds) for l in SECTION_3_4_LOSSES for m in (False, True)]
  return runs


def train_run(run: Run, out: pathlib.Path, extra: tuple[str, ...] = ()) -> dict:
  """Trains `run` in this process (a worker), unless done, and scores a run on a task of its
  own on that task's test set too; returns its metrics and times."""
  import gin  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from samtone_jax import evaluate, launch, train  # pylint: disable=g-import-not-at-top
  launch.setup_host()

  model_dir = out / run.name
  done, timing = model_dir / "metrics.json", model_dir / "replication_seconds.json"
  own_set, own_metrics = f"{run.task}_test", model_dir / "eval" / "metrics.json"
  model_dir.mkdir(parents=True, exist_ok=True)
  handler = logging.FileHandler(model_dir / "train.log")
  handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
  ours = logging.getLogger("samtone_jax")
  ours.addHandler(handler)
  ours.setLevel(logging.INFO)
  ours.propagate = False  # the console shows one line a run (main), the log all of them
  try:
    if not done.exists():
      start, cpu_start = time.perf_counter(), time.process_time()
      gin.clear_config()
      launch.parse_gin(*run.gin_args(model_dir.absolute(), extra))
      gin.get_configurable(train.train)()
      timing.write_text(json.dumps({"seconds": time.perf_counter() - start,
                                    "cpu_seconds": time.process_time() - cpu_start}))
    if own_set != EVAL_SET and not own_metrics.exists():
      gin.clear_config()
      launch.parse_gin([str(model_dir.absolute() / "config.gin"), "runs/eval.gin"],
                      [f"CHECKPOINT_PATH = '{model_dir.absolute()}'",
                       f"EVAL_TASKS = ['{own_set}']"])
      gin.get_configurable(evaluate.evaluate)()
  except Exception as e:  # gin's re-raised exception types do not pickle back to main
    ours.exception("%s failed", run.name)
    raise RuntimeError(f"{type(e).__name__}: {e}") from None
  finally:
    ours.removeHandler(handler)
    handler.close()
    gin.clear_config()
    jax.clear_caches()
  metrics = json.loads(done.read_text())
  if own_set != EVAL_SET:
    metrics.update({f"retrieval/{own_set}/{name}": value
                    for name, value in json.loads(own_metrics.read_text())[own_set].items()})
  times = json.loads(timing.read_text()) if timing.exists() else {}
  return {"metrics": metrics, "seconds": times.get("seconds"),
          "cpu_seconds": times.get("cpu_seconds")}


def _worker_init() -> None:
  logging.basicConfig(level=logging.WARNING)  # our lines go to each run's train.log


def summarise(runs: list[Run], results: dict[str, dict]) -> dict[str, dict]:
  """Per cell (a Run but its seed): "<set>/<metric>" -> mean and std over the seeds, for
  METRICS on each evaluation set of the cell."""
  cells = {}
  for run in runs:
    if run.name in results:
      cells.setdefault(run.name.rsplit("_seed", 1)[0], []).append(results[run.name]["metrics"])
  summary = {}
  for key, found in cells.items():
    names = set.intersection(*(set(metrics) for metrics in found))
    summary[key] = {name[len("retrieval/"):]:
                    _common.mean_std([metrics[name] for metrics in found])
                    for name in sorted(names)
                    if name.startswith("retrieval/") and name.rsplit("/", 1)[1] in METRICS}
  return summary


def duplicate_statistics(batch_size: int) -> dict[str, float]:
  """The sentences variant's unique-passage rate and expected pairs of rows of a random batch
  that share a passage: C(B, 2) sum_u n_u (n_u - 1) / (N (N - 1)), n_u the pairs of passage
  u and N all pairs."""
  from samtone_jax.tasks import quickstart  # pylint: disable=g-import-not-at-top
  found = {}
  for name, pairs in (("stdlib_code_search", quickstart.build_pairs()["train"]),
                      ("stdlib_code_search_sentences",
                       quickstart.build_sentence_pairs()["train"])):
    counts = {}
    for pair in pairs:
      counts[pair["passage"]] = counts.get(pair["passage"], 0) + 1
    total = len(pairs)
    same = sum(c * (c - 1) for c in counts.values()) / (total * (total - 1))
    found[name] = {"pairs": total, "unique_passages": len(counts),
                   "unique_rate": len(counts) / total,
                   "duplicate_row_pairs_per_batch": batch_size * (batch_size - 1) / 2 * same}
  return found


def _cell(summary: dict, key: str, name: str) -> str:
  return _common.mean_std_text(summary.get(key, {}).get(name))


def markdown(summary: dict, seeds: int, duplicates: dict) -> str:
  """The two tables of docs/replication.md."""
  lines = [f"Test set `{EVAL_SET}`, mean ± standard deviation over {seeds} seeds.", "",
           "| architecture | loss | " + " | ".join(METRICS) + " |",
           "|---|---|" + "---|" * len(METRICS)]
  for a in ARCHITECTURES:
    for l, label in LOSSES.items():
      lines.append(f"| {a.upper().replace('_', '-')} | {label} | "
                   + " | ".join(_cell(summary, f"{a}_{l}", f"{EVAL_SET}/{m}") for m in METRICS)
                   + " |")
  variant = duplicates["stdlib_code_search_sentences"]
  own = "stdlib_code_search_sentences_test"
  columns = [(EVAL_SET, m) for m in ("P@1", "MRR")] + [(own, m) for m in ("P@1", "MRR")]
  lines += ["", f"Section 3.4: ADE-SPL trained on `stdlib_code_search_sentences`"
            f" ({variant['pairs']} pairs, {variant['unique_rate']:.0%} unique passages,"
            f" {variant['duplicate_row_pairs_per_batch']:.1f} pairs of rows sharing a passage"
            f" per batch of 64 in expectation), scored on `{EVAL_SET}` (summaries as queries)"
            f" and on `{own}` (docstring sentences as queries, the variant's own test set):", "",
            "| loss | duplicate masking | "
            + " | ".join(f"{m}, {'summaries' if s == EVAL_SET else 'sentences'}"
                         for s, m in columns) + " |",
            "|---|---|" + "---|" * len(columns)]
  for l, label in SECTION_3_4_LOSSES.items():
    for masked in ("unmasked", "masked"):
      lines.append(f"| {label} | {'on' if masked == 'masked' else 'off'} | "
                   + " | ".join(_cell(summary, f"s34_{l}_{masked}", f"{s}/{m}")
                                for s, m in columns) + " |")
  return "\n".join(lines) + "\n"


def figures(out: pathlib.Path) -> Optional[pathlib.Path]:
  """The analysis figures of ADE-SPL, softmax against SamToNe (seed 0), in OUT/figures."""
  softmax, samtone = out / "ade_spl_in_batch_softmax_seed0", out / "ade_spl_samtone_seed0"
  if not ((softmax / "metrics.json").exists() and (samtone / "metrics.json").exists()):
    return None
  subprocess.run([sys.executable, "-m", "samtone_jax.analysis", f"--checkpoint={softmax}",
                  f"--checkpoint={samtone}", "--label=in-batch softmax", "--label=SamToNe",
                  f"--task={EVAL_SET}", f"--out={out / 'figures'}"], check=True)
  return out / "figures"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="/tmp/samtone_replication", help="the runs' folder")
  parser.add_argument("--seeds", type=int, default=3, help="seeds of each cell")
  parser.add_argument("--workers", type=int, default=2, help="runs at a time")
  parser.add_argument("--only", default="", help="train only runs whose name contains this")
  parser.add_argument("--gin", action="append", default=[],
                      help="a gin binding for every run, e.g. --gin='TRAIN_STEPS = 10'")
  args = parser.parse_args()
  out = pathlib.Path(args.out).absolute()
  out.mkdir(parents=True, exist_ok=True)
  runs = [r for r in grid(args.seeds) if args.only in r.name]
  if args.workers > 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " " + _common.ONE_THREAD).strip()

  # No JAX backend in this process: the workers start their own.
  machine = _common.machine(devices=False)
  described = f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}"
  start, results, failed = time.perf_counter(), {}, {}
  # Built once here, not by two workers at the same time.
  subprocess.run([sys.executable, "-m", "samtone_jax.prepare_data",
                  *sorted({run.task for run in runs})], check=True)
  print(f"{len(runs)} runs in {out}, {args.workers} at a time, on {described}", flush=True)
  # Fresh workers every few runs bound what a long study's processes accumulate
  # (concurrent.futures' max_tasks_per_child hangs on Python 3.11 once all workers retire).
  with multiprocessing.get_context("spawn").Pool(args.workers, _worker_init,
                                                 maxtasksperchild=4) as pool:
    pending = {run: pool.apply_async(train_run, (run, out, tuple(args.gin))) for run in runs}
    for run, result in pending.items():
      try:
        results[run.name] = result.get()
      except Exception as e:  # pylint: disable=broad-except
        failed[run.name] = f"{type(e).__name__}: {e}"
        print(f"FAILED {run.name}: {failed[run.name]} (log: {out / run.name / 'train.log'})",
              flush=True)
        continue
      elapsed = time.perf_counter() - start
      left = len(runs) - len(results) - len(failed)
      m = results[run.name]["metrics"]
      print(f"[{len(results) + len(failed)}/{len(runs)}] {run.name}: P@1"
            f" {m[f'retrieval/{EVAL_SET}/P@1']:.3f} MRR {m[f'retrieval/{EVAL_SET}/MRR']:.3f};"
            f" {elapsed / 60:.1f} min elapsed, ETA"
            f" {elapsed / (len(results) + len(failed)) * left / 60:.1f} min", flush=True)

  summary = summarise(runs, results)
  duplicates = duplicate_statistics(batch_size=64)
  table = markdown(summary, args.seeds, duplicates)
  figure_dir = figures(out)
  wall = time.perf_counter() - start
  timed = [r for r in results.values() if r["cpu_seconds"] is not None]
  # A worker runs on one thread: a run's CPU time is its time on an otherwise idle machine,
  # whatever else shared this one, and the study's is a run's times the runs a worker does.
  idle_minutes = (statistics.fmean(r["cpu_seconds"] for r in timed) * len(runs) / args.workers
                  / 60 if timed and args.workers > 1 else None)
  report = {"benchmark": "replicate", "machine": machine, "workers": args.workers,
            "seeds": args.seeds, "invocation_wall_seconds": wall,
            "run_seconds": _common.mean_std([r["seconds"] for r in timed]) if timed else None,
            "run_cpu_seconds": (_common.mean_std([r["cpu_seconds"] for r in timed])
                                if timed else None),
            "timed_runs": len(timed), "idle_machine_minutes": idle_minutes,
            "summary": summary, "duplicates": duplicates, "failed": failed,
            "runs": {name: r["metrics"] for name, r in results.items()},
            "figures": str(figure_dir) if figure_dir else None}
  (out / "replication.json").write_text(json.dumps(report, indent=2, sort_keys=True))
  (out / "replication.md").write_text(table)
  print(table)
  if idle_minutes is not None:
    print(f"From the CPU time of {len(timed)} runs, the {len(runs)} runs take"
          f" {idle_minutes:.1f} min on an idle machine like this one ({args.workers} workers)")
  print(f"{len(results)} runs done, {len(failed)} failed; this invocation took"
        f" {wall / 60:.1f} min on {described}; wrote {out / 'replication.json'},"
        f" {out / 'replication.md'}" + (f" and the figures in {figure_dir}" if figure_dir else ""))
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  main()
