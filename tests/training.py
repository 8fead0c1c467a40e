"""The tests' tiny training run: experiments/quickstart.gin shrunk to 12 steps of a
one-layer T5 of width 32, trained in this process, and the parameters of its checkpoints."""

import pathlib

import gin

from samtone_jax import checkpoints, launch, run_dir, train

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the checkout: experiments/, runs/
# Gin bindings of the tiny run, applied after experiments/quickstart.gin: 12 steps of batch
# 16, a checkpoint and an evaluation every 4 steps.
TINY_RUN = ["TRAIN_STEPS = 12", "BATCH_SIZE = 16", "CHECKPOINT_PERIOD = 4", "EVAL_PERIOD = 4",
            "TASK_FEATURE_LENGTHS = {'queries': 16, 'passages': 32}",
            "settings.Evaluation.batches = 2", "train_lib.train.log_period = 4",
            "t5.T5Config.d_model = 32", "t5.T5Config.d_ff = 32", "t5.T5Config.num_layers = 1",
            "t5.T5Config.dropout_rate = 0.1"]


def run_training(model_dir, *bindings: str) -> dict[str, float]:
  """Trains the tiny run into `model_dir` in this process (resuming it if `model_dir` has
  checkpoints), gin's configuration cleared before and after.

  Args:
    model_dir: the run's MODEL_DIR.
    *bindings: gin bindings applied after TINY_RUN (e.g. "TRAIN_STEPS = 4").

  Returns:
    train.train's final metrics ({"step": ..., "train/loss": ..., "retrieval/<set>/<metric>":
    ...}).
  """
  gin.clear_config()
  launch.parse_gin(["experiments/quickstart.gin"],
                   [f"MODEL_DIR = '{model_dir}'", *TINY_RUN, *bindings])
  try:
    return gin.get_configurable(train.train)()
  finally:
    gin.clear_config()


def trained_params(model_dir, step: int) -> dict:
  """The parameters of checkpoint `step` of the run in `model_dir`, whatever devices and
  processes saved it, replicated on this process's devices (as the evaluate command reads a
  checkpoint: `checkpoints.load_params` without a model).

  Returns:
    The parameter tree {"query_tower": ..., "passage_tower": ..., ...} of jax.Arrays.
  """
  return checkpoints.load_params(None, run_dir.RunDir(model_dir).checkpoint(step), {})
