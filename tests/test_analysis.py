"""`python -m samtone_jax.analysis` on two trained runs: the paper's three figures (t-SNE,
top-1 similarity, query-query over query-passage similarity) and their numbers."""

import json
import subprocess
import sys

import matplotlib.image

from tests.training import ROOT, run_training


def test_analysis_command_writes_three_figures_and_numbers(tfds_dir, tmp_path):
  for name, loss in (("softmax", "none"), ("samtone", "query")):
    run_training(tmp_path / name, "TRAIN_STEPS = 4", f"SAME_TOWER = '{loss}'")
  done = subprocess.run(
      [sys.executable, "-m", "samtone_jax.analysis", f"--checkpoint={tmp_path / 'softmax'}",
       f"--checkpoint={tmp_path / 'samtone'}", "--task=stdlib_code_search_test",
       f"--out={tmp_path / 'figures'}", "--sample=100"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  for name in ("figure1_tsne", "figure5_top1_similarity", "figure6_qq_over_qp"):
    image = matplotlib.image.imread(tmp_path / "figures" / f"{name}.png")
    assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01, name
  summary = json.loads((tmp_path / "figures" / "analysis.json").read_text())
  assert set(summary) == {"softmax", "samtone"}
  for stats in summary.values():
    assert -1 <= stats["top1_similarity"]["mean"] <= 1
    assert stats["alignment"]["to_positive"] > 0 and stats["alignment"]["to_nearest_query"] > 0
