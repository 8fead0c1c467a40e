"""The analysis: its statistics on hand-written embeddings, worked out by hand, and
`python -m samtone_jax.analysis` on two trained runs: the paper's three figures (t-SNE, top-1
similarity, query-query over query-passage similarity) and their numbers."""

import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from samtone_jax import analysis
from tests.training import ROOT, run_training

# Unit vectors in 2 dimensions: two judged queries and a corpus of three; three pairs.
EMBEDDINGS = {"queries": np.array([[1.0, 0.0], [0.0, 1.0]]),
              "corpus": np.array([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]]),
              "pair_queries": np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]),
              "pair_passages": np.array([[0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]])}


def test_statistics_of_hand_written_embeddings():
  stats = analysis.statistics(EMBEDDINGS, seed=0)
  np.testing.assert_allclose(stats["top1"], [1.0, 0.8])  # (1, 0) itself; (0.6, 0.8)
  # |(0.2, -0.6)|, |0|, |(1, 1)|
  np.testing.assert_allclose(stats["to_positive"], [0.4 ** 0.5, 0.0, 2 ** 0.5])
  # The queries' distances: 0.8 ** 0.5 (q0, q1), 2 ** 0.5 (q0, q2), 0.4 ** 0.5 (q1, q2).
  np.testing.assert_allclose(stats["to_nearest_query"], [0.8 ** 0.5, 0.4 ** 0.5, 0.4 ** 0.5])
  # Centroids (1.6, 1.8) / 3 and (0.4, 1.4) / 3: a difference of (0.4, 0.4 / 3).
  np.testing.assert_allclose(stats["centroids"], [(0.16 + 0.16 / 9) ** 0.5])
  # q_i.q_j / q_i.p_j for i != j: (0, 1) 0.6 / 0.6, (0, 2) 0 / -1, (1, 0) 0.6 / 0.96,
  # (1, 2) 0.8 / -0.6, (2, 0) 0 / 0.6, (2, 1) 0.8 / 0.8.
  ratios = {1.0, 0.0, 0.625, -4 / 3}
  assert 0 < len(stats["ratios"]) <= 4 * 3
  assert all(any(np.isclose(r, want) for want in ratios) for r in stats["ratios"]), stats


def test_summaries_are_the_mean_and_quantiles():
  assert analysis.summarise(np.array([5.0, 1.0, 4.0, 2.0, 3.0])) == pytest.approx(
      {"mean": 3.0, "q05": 1.2, "q25": 2.0, "q50": 3.0, "q75": 4.0, "q95": 4.8})


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
