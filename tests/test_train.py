"""The training entry point: gin, resume, SIGTERM, clear start-up errors, non-finite stops."""

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import samtone_jax.tasks  # pylint: disable=unused-import
from samtone_jax import inputs, launch, loop, train
from samtone_jax.tasks import vocabularies
from tests import processes
from tests.training import ROOT, TINY_RUN, run_training, trained_params


def test_resumed_run_equals_uninterrupted_run(tfds_dir, tmp_path):
  whole = run_training(tmp_path / "whole")
  assert whole["step"] == 12
  assert "TRAIN_STEPS = 12" in (tmp_path / "whole" / "config.gin").read_text()
  written = json.loads((tmp_path / "whole" / "metrics.json").read_text())
  assert written["step"] == 12
  assert 0 <= written["retrieval/stdlib_code_search_test/MRR"] <= 1  # the whole held-out pool
  assert written["retrieval/stdlib_code_search_test/P@1"] == whole[
      "retrieval/stdlib_code_search_test/P@1"]
  assert list((tmp_path / "whole" / "summaries").glob("events.out.tfevents*"))

  run_training(tmp_path / "parts", "settings.Checkpointing.steps_per_run = 8")  # as if stopped at 8
  assert ocp.CheckpointManager((tmp_path / "parts" / "checkpoints").absolute()).latest_step() == 8
  resumed = run_training(tmp_path / "parts")  # the same MODEL_DIR: resumes at step 8
  assert resumed["step"] == 12
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               trained_params(tmp_path / "parts", 12), trained_params(tmp_path / "whole", 12))
  assert resumed["train/loss"] == pytest.approx(whole["train/loss"], rel=1e-5)


@pytest.fixture
def poison(monkeypatch):
  """poison(k): the k-th batch that training draws has a token id outside the vocabulary,
  which embeds as NaN (as a batch tokenised with another vocabulary would)."""
  def arm(k):
    draw, count = inputs.GlobalBatches.__next__, itertools.count(1)

    def poisoned(self):
      batch = draw(self)
      if next(count) == k:
        queries = np.array(batch["queries"])
        queries[0, 0] = 10**6
        batch["queries"] = jax.device_put(queries, batch["queries"].sharding)
      return batch

    monkeypatch.setattr(inputs.GlobalBatches, "__next__", poisoned)
  return arm


NO_EVALUATION = ("EVAL_SPLIT = None", "EVAL_TASKS = []")


def test_a_poisoned_batch_stops_the_run_naming_its_step(tfds_dir, tmp_path, poison):
  poison(6)
  with pytest.raises(loop.TrainingError, match="non-finite training metrics at step 6"):
    run_training(tmp_path, *NO_EVALUATION)
  assert ocp.CheckpointManager(tmp_path.absolute() / "checkpoints").all_steps() == [4]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(trained_params(tmp_path, 4)))
  assert not (tmp_path / "metrics.json").exists()


def _summaries(model_dir, tag) -> dict[int, float]:
  """{step: value} of a scalar in MODEL_DIR/summaries."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for path in (model_dir / "summaries").glob("events.out.tfevents*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def test_skip_nonfinite_goes_on_and_counts_the_poisoned_step(tfds_dir, tmp_path, poison):
  poison(6)
  final = run_training(tmp_path, *NO_EVALUATION, "SKIP_NONFINITE = True")
  assert final["step"] == 12 and final["train/skipped_steps"] == 1
  assert json.loads((tmp_path / "metrics.json").read_text())["train/skipped_steps"] == 1
  assert _summaries(tmp_path, "skipped_steps") == {4: 0, 8: 1, 12: 0}
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(trained_params(tmp_path, 12)))


@pytest.mark.parametrize("binding, message", [
    ("t5.T5Config.d_modle = 32", "d_modle"),
    ("BATCH_SIZE = 12", "multiple of the 8 data-parallel devices"),
    ("MIXTURE_OR_TASK_NAME = 'no_such_task'", "no_such_task"),
    ("EVAL_SPLIT = 'dev'", "not a split of stdlib_code_search"),
    ("EVAL_TASKS = ['stdlib_code_search_tset']", "no evaluation set 'stdlib_code_search_tset'"),
    # Values out of range: a ValueError naming the macro or binding.
    ("TRAIN_STEPS = 0", "TRAIN_STEPS=0"),
    ("TRAIN_STEPS = -5", "TRAIN_STEPS=-5"),
    ("BATCH_SIZE = 0", "BATCH_SIZE=0"),
    ("BATCH_SIZE = 16.0", "BATCH_SIZE=16.0"),
    ("TASK_FEATURE_LENGTHS = {'queries': -4, 'passages': 32}", "TASK_FEATURE_LENGTHS="),
    ("TASK_FEATURE_LENGTHS = {'queries': 16, 'passages': 0}", "TASK_FEATURE_LENGTHS="),
    ("TASK_FEATURE_LENGTHS = {'queries': 16}", "TASK_FEATURE_LENGTHS="),
    ("TASK_FEATURE_LENGTHS = {'queries': 16, 'passage': 32}", "TASK_FEATURE_LENGTHS="),
    ("TEMPERATURE = 0", "TEMPERATURE=0"),
    ("TEMPERATURE = -0.05", "TEMPERATURE=-0.05"),
    ("TEMPERATURE = 1e999", "TEMPERATURE=inf"),
    ("SAME_TOWER = 'queries'", "SAME_TOWER='queries'"),
    ("PAIR_ALPHA = 1.5", "PAIR_ALPHA=1.5"),
    ("NUM_NEGATIVES = -1", "NUM_NEGATIVES=-1"),
    ("LEARNING_RATE = 0", "LEARNING_RATE=0"),
    ("LEARNING_RATE = -1e-3", "LEARNING_RATE=-0.001"),
    ("WARMUP_STEPS = 12", "WARMUP_STEPS=12"),
    ("NUM_PARTITIONS = 0", "NUM_PARTITIONS=0"),
    ("NUM_PARTITIONS = 3", "NUM_PARTITIONS=3"),
    ("GRAD_CACHE_CHUNK = 12", "GRAD_CACHE_CHUNK=12: must be None or a positive int that divides"),
    ("GRAD_CACHE_CHUNK = 4", "GRAD_CACHE_CHUNK=4"),  # fewer than the 8 data-parallel devices
    ("GRAD_CACHE_CHUNK = 0", "GRAD_CACHE_CHUNK=0"),
    ("CHECKPOINT_PERIOD = 0", "CHECKPOINT_PERIOD=0"),
    ("EVAL_PERIOD = -1", "EVAL_PERIOD=-1"),
    ("settings.Checkpointing.keep = 0", "settings.Checkpointing.keep=0"),
    ("settings.Checkpointing.steps_per_run = 0", "settings.Checkpointing.steps_per_run=0"),
    ("settings.Data.input_shards = 3", "multiple of the 3 input shards"),
    ("REQUIRE_INITIAL_CHECKPOINT = True", "INITIAL_CHECKPOINT_PATH=None: this experiment"
                                          " fine-tunes pretrained T5 v1.1 towers"),
    ("EVAL_TASKS = ['beir:/x/my eval', 'beir:/x/my_eval']",
     "EVAL_TASKS: the sets 'beir:/x/my eval' and 'beir:/x/my_eval' would both be reported as"
     " 'beir_my_eval'"),
])
def test_bad_configuration_fails_before_anything_is_compiled(tfds_dir, tmp_path, binding,
                                                             message):
  """A ValueError (KeyError for an unknown name) naming the value, before MODEL_DIR is
  created: the train state, the first thing compiled, is made after that."""
  with pytest.raises((ValueError, KeyError), match=re.escape(message)):
    run_training(tmp_path / "run", binding)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["", '{"query": " ", "passage": "p"}\n'])
def test_a_split_without_examples_stops_at_start_up_naming_its_files(tmp_path, text):
  """An empty training file (or one of blank texts only) stops before MODEL_DIR is made."""
  (tmp_path / "train.jsonl").write_text(text)
  gin.clear_config()
  launch.parse_gin(["experiments/own_data.gin", "models/t5_1_1_quickstart.gin"],
                   [f"MODEL_DIR = '{tmp_path / 'run'}'", *TINY_RUN,
                    f"TRAIN_FILES = ['{tmp_path / 'train.jsonl'}']",
                    f"vocabularies.t5_vocabulary_path.path = '{vocabularies.QUICKSTART_PATH}'"])
  try:
    with pytest.raises(ValueError, match=r"train.jsonl\]?: own_pairs train: no examples"):
      gin.get_configurable(train.train)()
  finally:
    gin.clear_config()
  assert not (tmp_path / "run").exists()


def test_two_evaluation_folders_of_one_name_are_reported_apart(tfds_dir, tmp_path,
                                                               beir_folder):
  """Training's retrieval evaluation names the sets as `evaluate` does: by their parents."""
  words = ["def", "return", "import", "class", "self", "print", "open", "list"]
  corpus = {f"d{i}": f"{words[i % 8]} {words[(3 * i) % 8]} {i}" for i in range(20)}
  a = beir_folder(tmp_path / "a" / "eval", corpus)
  b = beir_folder(tmp_path / "b" / "eval", dict(list(corpus.items())[:8]))
  final = run_training(tmp_path / "run", "TRAIN_STEPS = 1", "EVAL_PERIOD = 1",
                       "EVAL_SPLIT = None", f"EVAL_TASKS = ['beir:{a}', 'beir:{b}']")
  assert {key.split("/")[1] for key in final if key.startswith("retrieval/")} == {
      "beir_a_eval", "beir_b_eval"}
  assert final["retrieval/beir_b_eval/Recall@10"] == 1  # its 8 documents, each query's among


def test_sigterm_writes_a_checkpoint_and_exits(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  command = [sys.executable, "-m", "samtone_jax.train", "--gin_file=experiments/quickstart.gin",
             f"--gin.MODEL_DIR='{tmp_path}'", "--gin.TRAIN_STEPS=100000",
             "--gin.CHECKPOINT_PERIOD=100000", "--gin.BATCH_SIZE=8",
             "--gin.TASK_FEATURE_LENGTHS={'queries': 8, 'passages': 16}"]
  proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 240
  lines = []
  for line in proc.stdout:  # wait for training to be under way
    lines.append(line)
    if " step " in line or time.monotonic() > deadline:
      break
  proc.send_signal(signal.SIGTERM)
  try:
    out, _ = proc.communicate(timeout=120)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  log = "".join(lines) + out
  assert proc.returncode == 0, log[-3000:]
  assert "saving step" in log, log[-3000:]
  processes.assert_quiet(log)
  step = ocp.CheckpointManager(tmp_path.absolute() / "checkpoints").latest_step()
  assert step and step >= 50, log[-3000:]
  assert (tmp_path / "input_positions" / str(step)).is_dir()


def test_initial_checkpoint_path_starts_the_towers(tfds_dir, tmp_path):
  """A Hugging Face T5 folder of the configured sizes initialises both towers; one of other
  sizes is refused, naming the fields."""
  from samtone_jax import pretrained  # pylint: disable=g-import-not-at-top
  from tests import hf_fixtures  # pylint: disable=g-import-not-at-top
  hf_fixtures.save_t5_encoder(tmp_path / "t5", vocab_size=2000, d_model=32, d_ff=32,
                              num_heads=4, d_kv=16, num_layers=1,
                              relative_attention_num_buckets=32,
                              relative_attention_max_distance=128)
  _, tower = pretrained.load_hf_t5_encoder(tmp_path / "t5")
  run_training(tmp_path / "run", f"INITIAL_CHECKPOINT_PATH = '{tmp_path / 't5'}'",
               "settings.Checkpointing.steps_per_run = 1", "LEARNING_RATE = 1e-12")
  params = trained_params(tmp_path / "run", 1)
  for name in ("query_tower", "passage_tower"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), params[name], tower)
  with pytest.raises(pretrained.CheckpointError, match="num_layers: checkpoint 1, model 2"):
    run_training(tmp_path / "other", f"INITIAL_CHECKPOINT_PATH = '{tmp_path / 't5'}'",
                 "t5.T5Config.num_layers = 2")
