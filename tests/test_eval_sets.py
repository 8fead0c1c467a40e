"""Names of evaluation sets in results: distinct within a run, today's where they do not clash."""

import pathlib
import subprocess
import sys

import pytest

from samtone_jax import eval_sets


def test_sets_that_do_not_clash_keep_their_names():
  assert eval_sets.short_names(["beir_nfcorpus", "beir:/data/my eval", "beir:/data/a/eval#dev",
                                "beir:/data/b/scifact.zip/scifact", "beir:/data/c.zip"]) == {
      "beir_nfcorpus": "beir_nfcorpus", "beir:/data/my eval": "beir_my_eval",
      "beir:/data/a/eval#dev": "beir_eval_dev",
      "beir:/data/b/scifact.zip/scifact": "beir_scifact", "beir:/data/c.zip": "beir_c"}


def test_two_folders_of_one_name_are_named_by_their_parents():
  assert eval_sets.short_names(["beir:/data/a/eval", "beir:/data/b/eval/", "beir:/x/eval#dev",
                                "multireqa_squad"]) == {
      "beir:/data/a/eval": "beir_a_eval", "beir:/data/b/eval/": "beir_b_eval",
      "beir:/x/eval#dev": "beir_eval_dev", "multireqa_squad": "multireqa_squad"}
  assert eval_sets.short_names(["beir:/data/a/x/eval", "beir:/data/b/x/eval"]) == {
      "beir:/data/a/x/eval": "beir_a_x_eval", "beir:/data/b/x/eval": "beir_b_x_eval"}
  # A registered set keeps its name; the folder that clashes with it is renamed.
  assert eval_sets.short_names(["beir_nfcorpus", "beir:/data/nfcorpus"]) == {
      "beir_nfcorpus": "beir_nfcorpus", "beir:/data/nfcorpus": "beir_data_nfcorpus"}


def test_a_clash_that_parents_cannot_resolve_is_refused_naming_both():
  with pytest.raises(ValueError, match=r"'beir:/data/my eval' and 'beir:/data/my_eval' would"
                                       r" both be reported as 'beir_my_eval'"):
    eval_sets.short_names(["beir:/data/my eval", "beir:/data/my_eval"])


def test_the_registry_imports_no_source():
  """The registry (and BEIR folders by path) come without tasks/: sources register into it."""
  done = subprocess.run(
      [sys.executable, "-c", "import sys; import samtone_jax.eval_sets;"
       " assert 'samtone_jax.tasks' not in sys.modules, 'samtone_jax.tasks imported'"],
      cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True, text=True,
      timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
