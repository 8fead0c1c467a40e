"""Training's settings: each group refuses a value out of range, naming its macro; a run's
config.gin written before the settings were grouped (train's own arguments) still reads as
it was meant, and so do the old bindings on the command line."""

import dataclasses

import gin
import pytest

from samtone_jax import launch, settings

# What a run's config.gin of the earlier layout held of train's settings (the operative
# config: flat bindings of train's arguments, literal or macro).
OLD_CONFIG = """\
from __gin__ import dynamic_registration
from samtone_jax import train as train_lib

BATCH_SIZE = 8
CHECKPOINT_PERIOD = 4
EVAL_TASKS = ['stdlib_code_search_test']
MIXTURE_OR_TASK_NAME = 'stdlib_code_search'
TEMPERATURE = 0.05

train_lib.train.adafactor_initial_step = 0
train_lib.train.batch_size = %BATCH_SIZE
train_lib.train.bidirectional = False
train_lib.train.checkpoint_period = %CHECKPOINT_PERIOD
train_lib.train.eval_batches = 2
train_lib.train.eval_k = 100
train_lib.train.eval_period = 1000
train_lib.train.eval_split = None
train_lib.train.eval_tasks = %EVAL_TASKS
train_lib.train.input_shards = None
train_lib.train.keep_checkpoints = 5
train_lib.train.learning_rate = 0.01
train_lib.train.log_period = 7
train_lib.train.mask_duplicates = True
train_lib.train.mixture_or_task_name = %MIXTURE_OR_TASK_NAME
train_lib.train.num_negatives = 0
train_lib.train.pair_alpha = 0.0
train_lib.train.same_tower = 'none'
train_lib.train.steps_per_run = None
train_lib.train.strict_restore = True
train_lib.train.task_feature_lengths = {'queries': 16, 'passages': 32}
train_lib.train.temperature = %TEMPERATURE
train_lib.train.warmup_steps = 2
"""

EXPECTED = dict(
    data=settings.Data("stdlib_code_search", {"queries": 16, "passages": 32}, 8, 0, None),
    loss=settings.Loss(0.05, "none", False, 0.0, True),
    optimizer=settings.Optimizer(0.01, 2, 0),
    checkpointing=settings.Checkpointing(4, 5, True, None),
    evaluation=settings.Evaluation(1000, None, 2, ["stdlib_code_search_test"], 100))


@pytest.fixture(autouse=True)
def _fresh_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_an_old_config_gin_binds_the_same_settings(tmp_path):
  (tmp_path / "config.gin").write_text(OLD_CONFIG)
  launch.parse_gin([str(tmp_path / "config.gin")])
  references = {arg: gin.query_parameter(f"train_lib.train.{arg}") for arg in EXPECTED}
  assert {arg: ref.configurable.name for arg, ref in references.items()} == {
      arg: type(value).__name__ for arg, value in EXPECTED.items()}
  with gin.config_scope(None):
    built = {arg: ref.scoped_configurable_fn() for arg, ref in references.items()}
  assert built == EXPECTED
  assert gin.query_parameter("train_lib.train.log_period") == 7  # train's own: unchanged


def test_old_bindings_on_the_command_line_reach_their_new_homes(tmp_path):
  (tmp_path / "config.gin").write_text(OLD_CONFIG)
  launch.parse_gin([str(tmp_path / "config.gin")],
                   ["train_lib.train.steps_per_run = 3", "train_lib.train.eval_k = 10",
                    "settings.Data.input_shards = 2"])
  references = {arg: gin.query_parameter(f"train_lib.train.{arg}") for arg in EXPECTED}
  with gin.config_scope(None):
    built = {arg: ref.scoped_configurable_fn() for arg, ref in references.items()}
  assert built["checkpointing"] == dataclasses.replace(EXPECTED["checkpointing"],
                                                       steps_per_run=3)
  assert built["evaluation"] == dataclasses.replace(EXPECTED["evaluation"], k=10)
  assert built["data"] == dataclasses.replace(EXPECTED["data"], input_shards=2)


def test_upgrade_leaves_other_text_as_it_is():
  text = "train_lib.train.log_period = 4\nMODEL_DIR = '/x/train_lib.train.eval_k'\n"
  assert settings.upgrade_bindings(text, whole_file=True) == text


@pytest.mark.parametrize("group, values, message", [
    (settings.Data, dict(mixture_or_task_name="t", task_feature_lengths={"queries": 1,
                                                                         "passages": 8},
                         batch_size=8), "TASK_FEATURE_LENGTHS="),
    (settings.Data, dict(mixture_or_task_name="t", task_feature_lengths={"queries": 8,
                                                                         "passages": 8},
                         batch_size=True), "BATCH_SIZE=True"),
    (settings.Loss, dict(same_tower="document", bidirectional=False), "SAME_TOWER='document'"),
    (settings.Optimizer, dict(learning_rate=float("nan")), "LEARNING_RATE=nan"),
    (settings.Optimizer, dict(adafactor_initial_step=-1), "ADAFACTOR_INITIAL_STEP=-1"),
    (settings.Checkpointing, dict(keep=0), "settings.Checkpointing.keep=0"),
    (settings.Evaluation, dict(k=0), "settings.Evaluation.k=0"),
])
def test_each_group_refuses_a_value_out_of_range_naming_it(group, values, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    group(**values)
