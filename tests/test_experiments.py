"""Every gin experiment of the paper's Table 1 loads, with the paper's settings, and builds."""

import pathlib

import flax.linen as nn
import gin
import jax
import pytest

import samtone_jax
from samtone_jax import optimizers, train, trainer
from samtone_jax.tasks import msmarco, multireqa

PAPER = sorted((samtone_jax.GIN_CONFIGS_DIR / "experiments" / "paper").glob("*_*_*.gin"))
TASKS = {"msmarco": "msmarco_passage", "squad": "multireqa_squad",
         "nq": "multireqa_naturalquestions", "triviaqa": "multireqa_triviaqa",
         "searchqa": "multireqa_searchqa"}
LOSSES = {"in_batch_softmax": ("none", 0.0), "samtone": ("query", 0.0), "pair": ("none", 0.1)}


@gin.configurable
def _experiment_model(model=gin.REQUIRED):
  return model


def _macros(path, *names):
  gin.clear_config()
  train.parse_gin([f"experiments/paper/{pathlib.Path(path).name}"],
                  ["MODEL_DIR = '/unused'", "_experiment_model.model = %MODEL"])
  return {n: gin.query_parameter(f"{n}/gin.macro.value") for n in names}


def test_the_grid_is_complete():
  names = {p.stem for p in PAPER}
  assert names == {f"{d}_{a}_{l}" for d in TASKS for a in ("sde", "ade_spl") for l in LOSSES}


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_settings(path):
  data, rest = path.stem.split("_", 1)
  architecture = "ade_spl" if rest.startswith("ade_spl") else "sde"
  loss = rest[len(architecture) + 1:]
  got = _macros(path, "TRAIN_STEPS", "BATCH_SIZE", "LEARNING_RATE", "WARMUP_STEPS",
                "TEMPERATURE", "BIDIRECTIONAL", "SAME_TOWER", "PAIR_ALPHA", "ARCHITECTURE",
                "MIXTURE_OR_TASK_NAME", "EMBEDDING_DIM", "EVAL_SPLIT")
  gin.clear_config()
  builder = msmarco.MsmarcoPassage if data == "msmarco" else multireqa.Multireqa
  eval_split = got.pop("EVAL_SPLIT")  # a split the task's builder makes, or none
  assert eval_split is None if data == "msmarco" else eval_split in builder.SPLITS
  assert got == dict(TRAIN_STEPS=20000, BATCH_SIZE=512, LEARNING_RATE=1e-3, WARMUP_STEPS=0,
                     TEMPERATURE=0.01, BIDIRECTIONAL=True, SAME_TOWER=LOSSES[loss][0],
                     PAIR_ALPHA=LOSSES[loss][1], ARCHITECTURE=architecture,
                     MIXTURE_OR_TASK_NAME=TASKS[data], EMBEDDING_DIM=768)


@pytest.mark.parametrize("name", ["msmarco_sde_samtone", "squad_ade_spl_pair"])
def test_paper_model_and_train_state_build(name):
  """The model of the experiment and its abstract train state (no memory allocated)."""
  _macros(name + ".gin")
  model = _experiment_model()
  gin.clear_config()
  assert (model.config.d_model, model.config.num_layers) == (768, 12)
  batch = trainer.example_batch(512, {"queries": 64, "passages": 256})
  optimizer = optimizers.adafactor(optimizers.linear_decay_schedule(1e-3, 20000))

  def init(rng):
    params = nn.unbox(model.init(rng, batch["queries"][:2], batch["passages"][:2])["params"])
    return trainer.TrainState(step=0, params=params, opt_state=optimizer.init(params))

  state = jax.eval_shape(init, jax.random.key(0))
  towers = 1 if model.architecture == "sde" else 2
  count = sum(x.size for x in jax.tree.leaves(state.params))
  assert 109e6 * towers < count < 112e6 * towers
