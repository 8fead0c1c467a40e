r"""Do mined hard negatives help? The quickstart's model mines, and the quickstart retrains.

  python benchmarks/mining_study.py --out=/tmp/samtone_mining [--seeds=3] [--workers=2]

1. Writes the quickstart set's training pairs (`stdlib_code_search`, train) as OUT/train.jsonl.
2. Trains experiments/quickstart.gin on that file (the task own_pairs), `--seeds` seeds: the
   in-batch-only rows. Seed 0 is the first-stage model.
3. Mines OUT/mined.jsonl with it (`python -m samtone_jax.mine`: the top MINE_TOP_N=30 a
   query, its positives dropped).
4. Retrains the quickstart on the mined file with 1 and with 3 negatives a query
   (own_pairs_with_negatives, drawn anew each epoch), `--seeds` seeds each.
Every run is scored as the quickstart is, on `stdlib_code_search_test` (P@1, MRR, Recall@10
against the whole pool of held-out functions). A run with a metrics.json is done and is
skipped: after a crash, rerun the command. Writes OUT/mining_study.json and OUT/mining_study.md.
"""

import argparse
import concurrent.futures
import json
import pathlib
import sys

import _common

EVAL_SET = "stdlib_code_search_test"
METRICS = ("P@1", "MRR", "Recall@10")


def _vocabulary_flag() -> str:
  from samtone_jax.tasks import vocabularies  # pylint: disable=g-import-not-at-top
  return f"--gin.vocabularies.t5_vocabulary_path.path='{vocabularies.QUICKSTART_PATH}'"


def train(out: pathlib.Path, name: str, train_file: pathlib.Path, negatives: int, seed: int,
          one_thread: bool) -> dict:
  model_dir = out / name
  if not (model_dir / "metrics.json").exists():
    model_dir.mkdir(parents=True, exist_ok=True)
    task = "own_pairs_with_negatives" if negatives else "own_pairs"
    _common.run_logged(
        [sys.executable, "-m", "samtone_jax.train", "--gin_file=experiments/quickstart.gin",
         f"--gin.MODEL_DIR='{model_dir}'", f"--gin.SEED={seed}",
         f"--gin.MIXTURE_OR_TASK_NAME='{task}'", f"--gin.NUM_NEGATIVES={negatives}",
         f"--gin.own_data.pairs_files.train=['{train_file}']",
         f"--gin.own_data.pairs_files.num_negatives={negatives}", "--gin.EVAL_SPLIT=None",
         _vocabulary_flag()], model_dir / "train.log", one_thread)
  metrics = json.loads((model_dir / "metrics.json").read_text())
  return {m: metrics[f"retrieval/{EVAL_SET}/{m}"] for m in METRICS}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--workers", type=int, default=2)
  args = parser.parse_args()
  out = args.out.absolute()
  out.mkdir(parents=True, exist_ok=True)
  from samtone_jax.tasks import quickstart  # pylint: disable=g-import-not-at-top
  train_file = out / "train.jsonl"
  if not train_file.exists():
    pairs = quickstart.build_pairs()["train"]
    train_file.write_text("".join(json.dumps({"query": p["query"], "passage": p["passage"]})
                                  + "\n" for p in pairs))
  one_thread = args.workers > 1
  results = {}
  with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
    def submit(negatives: int, source: pathlib.Path) -> dict:
      return {seed: pool.submit(train, out, f"negatives{negatives}_seed{seed}", source,
                                negatives, seed, one_thread) for seed in range(args.seeds)}

    def gather(futures: dict) -> dict:
      return {seed: future.result() for seed, future in futures.items()}

    results[0] = gather(submit(0, train_file))
    mined = out / "mined.jsonl"
    if not mined.exists():
      first = out / "negatives0_seed0"
      _common.run_logged(
          [sys.executable, "-m", "samtone_jax.mine", f"--gin_file={first / 'config.gin'}",
           "--gin_file=runs/mine.gin", f"--gin.CHECKPOINT_PATH='{first}'",
           f"--gin.MINE_INPUT_FILES=['{train_file}']", f"--gin.MINE_OUTPUT_FILE='{mined}'"],
          out / "mine.log", one_thread=False)
    retrained = {k: submit(k, mined) for k in (1, 3)}  # both at once, across the workers
    results.update({k: gather(futures) for k, futures in retrained.items()})

  lines = [f"`{EVAL_SET}`, mean ± standard deviation over {args.seeds} seeds.", "",
           "| negatives a query | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
  for k, by_seed in results.items():
    label = "in-batch only" if k == 0 else f"{k} mined"
    lines.append(f"| {label} | " + " | ".join(
        _common.mean_std_text(_common.mean_std([r[m] for r in by_seed.values()]))
        for m in METRICS) + " |")
  (out / "mining_study.md").write_text("\n".join(lines) + "\n")
  (out / "mining_study.json").write_text(json.dumps(
      {"machine": _common.machine(devices=False), "seeds": args.seeds,
       "results": {str(k): v for k, v in results.items()}}, indent=2))
  print("\n".join(lines))


if __name__ == "__main__":
  main()
