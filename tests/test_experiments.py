"""Every gin experiment of the paper loads, with the paper's settings, and builds.

experiments/paper/ holds Table 1 (`{data}_{arch}_{loss}.gin`), Table 3 (SamToNe on both
towers, `{data}_{arch}_samtone_both.gin`), Figure 3's model sizes
(`msmarco_{arch}_{loss}_{large,xxl}.gin`) and Table 2's BEIR evaluation
(`beir_zero_shot.gin`); the small replication's experiments/replication.gin is checked too.
"""

import math
import re

import gin
import jax
import pytest

import samtone_jax
from samtone_jax import eval_sets, launch, optimizers, partitioning, train, trainer  # pylint: disable=unused-import
from samtone_jax.tasks import msmarco, multireqa

PAPER_DIR = samtone_jax.GIN_CONFIGS_DIR / "experiments" / "paper"
TASKS = {"msmarco": "msmarco_passage", "squad": "multireqa_squad",
         "nq": "multireqa_naturalquestions", "triviaqa": "multireqa_triviaqa",
         "searchqa": "multireqa_searchqa"}
LOSSES = {"in_batch_softmax": ("none", 0.0), "samtone": ("query", 0.0), "pair": ("none", 0.1),
          "samtone_both": ("both", 0.0)}
TABLE_1 = {f"{d}_{a}_{l}" for d in TASKS for a in ("sde", "ade_spl")
           for l in ("in_batch_softmax", "samtone", "pair")}
TABLE_3 = {f"{d}_{a}_samtone_both" for d in TASKS for a in ("sde", "ade_spl")}
FIGURE_3 = {f"msmarco_{a}_{l}_{s}" for a in ("sde", "ade_spl")
            for l in ("in_batch_softmax", "samtone") for s in ("large", "xxl")}
TRAINING = sorted(TABLE_1 | TABLE_3 | FIGURE_3)
NAME = re.compile(r"(?P<data>[a-z]+)_(?P<arch>sde|ade_spl)_(?P<loss>[a-z_]+?)"
                  r"(?:_(?P<size>large|xxl))?$")
# (d_model, layers, NUM_PARTITIONS, tower parameters) of each size.
SIZES = {"base": (768, 12, 1, 109.6e6), "large": (1024, 24, 1, 341.5e6),
         "xxl": (4096, 24, 8, 4.7e9)}


@gin.configurable
def _experiment_model(model=gin.REQUIRED):
  return model


def _macros(files, *names, bindings=()):
  gin.clear_config()
  launch.parse_gin(files, ["MODEL_DIR = '/unused'", "_experiment_model.model = %MODEL",
                          *bindings])
  return {n: gin.query_parameter(f"{n}/gin.macro.value") for n in names}


def test_the_paper_folder_is_exactly_the_grid():
  names = {p.stem for p in PAPER_DIR.glob("*.gin")}
  assert names == set(TRAINING) | {"paper_run", "beir_zero_shot"}


@pytest.mark.parametrize("name", TRAINING)
def test_paper_settings(name):
  """The paper's run (Adafactor's schedule, 20k steps, lr 1e-3 to 0, t = 0.01, batch 512)
  and the data, architecture, loss and size that the file's name says."""
  parts = NAME.match(name).groupdict()
  size = parts["size"] or "base"
  got = _macros([f"experiments/paper/{name}.gin"], "TRAIN_STEPS", "BATCH_SIZE",
                "LEARNING_RATE", "WARMUP_STEPS", "TEMPERATURE", "BIDIRECTIONAL", "SAME_TOWER",
                "PAIR_ALPHA", "ARCHITECTURE", "MIXTURE_OR_TASK_NAME", "EMBEDDING_DIM",
                "EVAL_SPLIT", "NUM_PARTITIONS", "TASK_FEATURE_LENGTHS", "EVAL_TASKS",
                "REQUIRE_INITIAL_CHECKPOINT", "ADAFACTOR_INITIAL_STEP")
  model = _experiment_model()
  gin.clear_config()
  builder = msmarco.MsmarcoPassage if parts["data"] == "msmarco" else multireqa.Multireqa
  eval_split = got.pop("EVAL_SPLIT")  # a split the task's builder makes, or none
  assert eval_split is None if parts["data"] == "msmarco" else eval_split in builder.SPLITS
  d_model, layers, partitions, _ = SIZES[size]
  assert got == dict(TRAIN_STEPS=20000, BATCH_SIZE=512, LEARNING_RATE=1e-3, WARMUP_STEPS=0,
                     TEMPERATURE=0.01, BIDIRECTIONAL=True, SAME_TOWER=LOSSES[parts["loss"]][0],
                     PAIR_ALPHA=LOSSES[parts["loss"]][1], ARCHITECTURE=parts["arch"],
                     MIXTURE_OR_TASK_NAME=TASKS[parts["data"]], EMBEDDING_DIM=768,
                     NUM_PARTITIONS=partitions,
                     TASK_FEATURE_LENGTHS={"queries": 64, "passages": 256},
                     EVAL_TASKS=["msmarco_passage_dev_small" if parts["data"] == "msmarco"
                                 else TASKS[parts["data"]]],
                     REQUIRE_INITIAL_CHECKPOINT=True, ADAFACTOR_INITIAL_STEP=1_000_000)
  assert (model.architecture, model.config.d_model, model.config.num_layers) == (
      parts["arch"], d_model, layers)


def _abstract_state(model, mesh):
  """The experiment's train state as ShapeDtypeStructs with their shardings: nothing is
  allocated."""
  batch = trainer.example_batch(512, {"queries": 64, "passages": 256})
  optimizer = optimizers.adafactor(optimizers.linear_decay_schedule(1e-3, 20000))
  state, _ = trainer.create_train_state(model, optimizer, jax.random.key(0), batch, mesh,
                                        partitioning.standard_logical_axis_rules(),
                                        abstract=True)
  return state


@pytest.mark.parametrize("name", ["msmarco_sde_samtone", "squad_ade_spl_pair",
                                  "nq_ade_spl_samtone_both", "msmarco_sde_samtone_large",
                                  "msmarco_ade_spl_samtone_xxl"])
def test_paper_model_and_train_state_build(name):
  """The experiment's model and its abstract train state, sharded on its NUM_PARTITIONS
  (of the 8 simulated devices): the model axis splits XXL's weights, so that a device holds
  about an eighth of the parameters."""
  size = NAME.match(name).group("size") or "base"
  partitions = _macros([f"experiments/paper/{name}.gin"], "NUM_PARTITIONS")["NUM_PARTITIONS"]
  model = _experiment_model()
  gin.clear_config()
  mesh = partitioning.create_mesh(partitions)
  state = _abstract_state(model, mesh)
  towers = 1 if model.architecture == "sde" else 2
  count = sum(x.size for x in jax.tree.leaves(state.params))
  assert SIZES[size][3] * towers < count < 1.02 * SIZES[size][3] * towers
  per_device = sum(math.prod(x.sharding.shard_shape(x.shape))
                   for x in jax.tree.leaves(state.params))
  assert per_device < 1.05 * count / partitions


def test_beir_zero_shot_evaluates_every_public_set_but_the_training_one():
  """Table 2's file completes an MS MARCO run's config into an evaluation: every binding of
  evaluate() resolves, and EVAL_TASKS are BEIR's registered sets but MS MARCO."""
  got = _macros(["experiments/paper/msmarco_sde_samtone.gin",
                 "experiments/paper/beir_zero_shot.gin"], "EVAL_TASKS", "EVAL_K",
                bindings=["CHECKPOINT_PATH = '/run'"])
  for arg in ("model", "checkpoint_path", "eval_tasks", "task_feature_lengths",
              "mixture_or_task_name", "k"):
    gin.query_parameter(f"eval_lib.evaluate.{arg}")
  model = _experiment_model()
  gin.clear_config()
  beir = {n for n in eval_sets.names() if n.startswith("beir_")} - {"beir_msmarco"}
  assert sorted(got["EVAL_TASKS"]) == sorted(beir) and len(beir) == 13
  assert got["EVAL_K"] >= 10 and model.architecture == "sde"


@pytest.mark.parametrize("architecture", ["sde", "ade", "ade_spl"])
@pytest.mark.parametrize("loss", ["in_batch_softmax", "samtone", "samtone_both", "pair",
                                  "samtone_document"])
def test_replication_cells_keep_their_settings(architecture, loss):
  """benchmarks/replicate.py's cells: the architecture and loss files change only those;
  the replication's temperature and data stay."""
  got = _macros(["experiments/replication.gin", f"architectures/{architecture}.gin",
                 f"losses/{loss}.gin"], "ARCHITECTURE", "SAME_TOWER", "PAIR_ALPHA",
                "TEMPERATURE", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "MIXTURE_OR_TASK_NAME")
  gin.clear_config()
  assert got == dict(ARCHITECTURE=architecture, SAME_TOWER=LOSSES.get(loss, ("document",))[0],
                     PAIR_ALPHA=LOSSES.get(loss, (None, 0.0))[1], TEMPERATURE=0.05,
                     TASK_FEATURE_LENGTHS={"queries": 32, "passages": 64}, TRAIN_STEPS=400,
                     MIXTURE_OR_TASK_NAME="stdlib_code_search")
