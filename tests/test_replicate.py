"""benchmarks/replicate.py's grid and summary (its runs are the experiments of
test_experiments.py; the study itself is a benchmark, run by hand)."""

import importlib.util
import pathlib
import sys

import numpy as np

_BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_BENCHMARKS))  # replicate.py imports _common, as when run as a script
_PATH = _BENCHMARKS / "replicate.py"
_SPEC = importlib.util.spec_from_file_location("replicate", _PATH)
replicate = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(replicate)


def test_the_grid_has_every_cell_with_every_seed():
  runs = replicate.grid(3)
  assert len({run.name for run in runs}) == len(runs) == 3 * (12 + 4)
  cells = {(r.architecture, r.loss, r.task, r.mask_duplicates) for r in runs}
  assert len(cells) == 16 and all(sum(r.seed == s for r in runs) == 16 for s in range(3))
  assert [r.seed for r in runs[:36]] == sorted(r.seed for r in runs[:36])  # table first


def test_summary_is_the_mean_and_sample_std_over_seeds():
  runs = [r for r in replicate.grid(3) if r.name.startswith("sde_pair_")]
  values = {"sde_pair_seed0": 0.1, "sde_pair_seed1": 0.2, "sde_pair_seed2": 0.6}
  results = {name: {"metrics": {f"retrieval/{replicate.EVAL_SET}/{m}": v
                                for m in replicate.METRICS} | {"train/loss": 1.0}}
             for name, v in values.items()}
  summary = replicate.summarise(runs, results)
  got = summary["sde_pair"][f"{replicate.EVAL_SET}/P@1"]
  want = list(values.values())
  assert np.isclose(got["mean"], np.mean(want)) and np.isclose(got["std"], np.std(want, ddof=1))
  assert set(summary["sde_pair"]) == {f"{replicate.EVAL_SET}/{m}" for m in replicate.METRICS}
  table = replicate.markdown(summary, 3, {"stdlib_code_search_sentences": {
      "pairs": 10, "unique_rate": 0.5, "duplicate_row_pairs_per_batch": 1.0}})
  assert "| SDE | PAIR | 0.300 ± 0.265 |" in table and "| ADE | PAIR | n/a |" in table
