"""The training loop's step rate, end to end: `python -m samtone_jax.train` on the quickstart.

Each round runs the quickstart command (`experiments/quickstart.gin`) once per source tree,
one after the other, each in a fresh process with the machine otherwise idle, for --steps
steps logged every --log_period; a run's rate is the median examples/s of its log lines
after the first two periods (compilation, warm-up). Rounds interleave the trees, so that two
trees' rates (e.g. a change against the commit before it, checked out with `git worktree`)
are compared under the same machine state:

  git worktree add /tmp/before HEAD~1
  python benchmarks/train_loop.py --tree /tmp/before --tree . --rounds 3
  python benchmarks/train_loop.py --tree /tmp/before --tree . --steps 400 --log_period 50 \
      --gin BATCH_SIZE=8 --gin "TASK_FEATURE_LENGTHS={'queries': 8, 'passages': 16}"

The second makes the step small enough (milliseconds) that the loop's own cost, waiting on
the device and fetching metrics, is a visible part of it.

A tree is put first on PYTHONPATH, ahead of the installed package. Writes
benchmarks/results/train_loop.json (or --out): each run's rates, each tree's median, the
ratio of each tree's median to the first tree's, and the median of the rounds' ratios (which
a drift of the machine's speed across rounds disturbs less).
"""

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

import _common  # pylint: disable=g-bad-import-order  (this folder)

_RATE = re.compile(r"step (\d+)/\d+ .* (\d+) examples/s")


def run_once(tree: pathlib.Path, steps: int, log_period: int, flags: list[str]) -> list[float]:
  """The examples/s of each log line after the first two, of one quickstart run."""
  with tempfile.TemporaryDirectory() as model_dir:
    command = [sys.executable, "-m", "samtone_jax.train",
               "--gin_file=experiments/quickstart.gin", f"--gin.MODEL_DIR='{model_dir}'",
               f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_PERIOD=100000",
               "--gin.EVAL_PERIOD=100000", "--gin.EVAL_SPLIT=None", "--gin.EVAL_TASKS=[]",
               f"--gin.train.log_period={log_period}", *flags]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tree.absolute()), *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"{tree}: the run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
  rates = [(int(m.group(1)), float(m.group(2)))
           for m in map(_RATE.search, out.stdout.splitlines()) if m]
  return [rate for step, rate in rates if step > 2 * log_period]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tree", action="append", required=True,
                      help="a source tree holding samtone_jax/ (repeatable)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--log_period", type=int, default=10)
  parser.add_argument("--gin", action="append", default=[], metavar="NAME=VALUE",
                      help="a gin binding for every run, e.g. BATCH_SIZE=8 for a step so"
                      " small that the loop's own overhead shows (repeatable)")
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"
                                           / "train_loop.json"))
  args = parser.parse_args()
  trees = [pathlib.Path(t) for t in args.tree]
  runs = {str(t): [] for t in trees}
  for round_ in range(args.rounds):
    for tree in trees:
      rates = run_once(tree, args.steps, args.log_period, [f"--gin.{b}" for b in args.gin])
      runs[str(tree)].append(rates)
      print(f"round {round_ + 1}/{args.rounds} {tree}: median {statistics.median(rates):.1f}"
            f" examples/s ({len(rates)} log periods)", flush=True)
  medians = {t: statistics.median(r for rates in runs[t] for r in rates) for t in runs}
  first = str(trees[0])
  per_round = {t: [statistics.median(a) / statistics.median(b)
                   for a, b in zip(runs[t], runs[first])] for t in runs}
  result = {"machine": _common.machine(), "steps": args.steps, "log_period": args.log_period,
            "gin": args.gin,
            "runs_examples_per_second": runs, "median_examples_per_second": medians,
            "ratio_to_first_tree": {t: m / medians[first] for t, m in medians.items()},
            "round_ratios_to_first_tree": per_round,
            "median_round_ratio_to_first_tree": {t: statistics.median(r)
                                                 for t, r in per_round.items()}}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2))
  print(json.dumps({k: result[k] for k in ("median_examples_per_second", "ratio_to_first_tree",
                                           "median_round_ratio_to_first_tree")}, indent=2))


if __name__ == "__main__":
  main()
