"""Test set-up: 8 simulated CPU devices, so that sharding tests run on any machine, the host
set up as the entry points do, and the real published data of ../shared/data where it exists.

XLA reads the device-count flag once, when JAX first starts a backend, so it is set here,
before any test module imports jax.
"""

import os
import pathlib

import pytest

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The tests use the library as the entry points do: TensorFlow on the host only, and every
# source of tasks/ registered (its tasks, evaluation sets and gin configurables).
from samtone_jax import launch  # pylint: disable=g-import-not-at-top,wrong-import-position
launch.setup_host()

# Real published files (../shared/data beside the checkout): present on the project's
# machines and in CI, absent from a user's clone, where the tests that read them skip.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data():
  if not SHARED_DATA.is_dir():
    pytest.skip(f"no real data at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """A TFDS data folder for the module's tests, where the tasks' datasets (the quickstart's)
  are prepared on first use, as training in this process prepares them."""
  import seqio  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("tfds"))
  seqio.set_tfds_data_dir_override(path)
  yield path
  seqio.set_tfds_data_dir_override(None)


@pytest.fixture(scope="session")
def subprocess_env(tmp_path_factory) -> dict[str, str]:
  """Environment variables of training subprocesses: TFDS_DATA_DIR holding the quickstart
  set, built once (a run on several processes needs its data prepared beforehand), and one
  JAX compilation cache for all (a restarted run compiles nothing again)."""
  import seqio  # pylint: disable=g-import-not-at-top
  from samtone_jax import inputs  # pylint: disable=g-import-not-at-top
  tfds_dir = tmp_path_factory.mktemp("quickstart_tfds")
  seqio.set_tfds_data_dir_override(str(tfds_dir))
  try:
    inputs.prepare("stdlib_code_search")
  finally:
    seqio.set_tfds_data_dir_override(None)
  return {"TFDS_DATA_DIR": str(tfds_dir),
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache"))}


def tiny_model():
  """(model, task_feature_lengths) of a tiny DualEncoder whose vocabulary size fits the byte
  and the quickstart vocabularies."""
  from samtone_jax import dual_encoder, t5  # pylint: disable=g-import-not-at-top
  config = t5.T5Config(vocab_size=2048, d_model=8, d_ff=16, num_heads=2, head_dim=4,
                       num_layers=1, relative_attention_num_buckets=4,
                       relative_attention_max_distance=16)
  return dual_encoder.DualEncoder(config, "sde", 6), {"queries": 8, "passages": 16}


@pytest.fixture
def tiny_run(tmp_path):
  """A MODEL_DIR (tmp_path/"run") with checkpoints of steps 4 and 8 of `tiny_model` (other
  parameters each), as `checkpoints.load_params` reads them: (model, MODEL_DIR,
  task_feature_lengths)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  model, lengths = tiny_model()
  ids = jnp.zeros((1, 8), jnp.int32)
  manager = ocp.CheckpointManager(tmp_path / "run" / "checkpoints")
  for step in (4, 8):
    params = nn.unbox(model.init(jax.random.key(step), ids, ids))["params"]
    manager.save(step, args=ocp.args.StandardSave({"params": params, "step": step}))
  manager.wait_until_finished()
  return model, tmp_path / "run", lengths


@pytest.fixture
def beir_folder():
  """`write(folder, corpus)`: a BEIR-format folder of `corpus` ({id: text}) and one query a
  document (query "q<id>", its text the document's first two words, judging that document);
  returns the folder."""
  import json  # pylint: disable=g-import-not-at-top

  def write(folder, corpus):
    folder = pathlib.Path(folder)
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in corpus.items()))
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": " ".join(t.split()[:2])}) + "\n"
        for i, t in corpus.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{i}\t1\n" for i in corpus))
    return folder
  return write
