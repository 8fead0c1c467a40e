"""The install is what the README says, and the package carries its gin files and tasks."""

import pathlib
import re
import subprocess
import sys

import gin
import jax.numpy as jnp
import pytest

import samtone_jax
from samtone_jax import losses

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOSS_GIN_FILES = ("in_batch_softmax", "samtone", "samtone_document", "samtone_both", "pair")


def _code_lines(markdown):
  blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)
  return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_commands():
  readme = _code_lines((ROOT / "README.md").read_text())
  ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
  for command in ('pip install -e ".[test]"', "pytest"):
    assert command in readme, f"README.md lost its command {command!r}"
    assert command in ci, f".ci/run does not run README.md's command {command!r}"


def _fresh_python(code: str, cwd=ROOT) -> subprocess.CompletedProcess:
  """`code` run by a new interpreter (nothing imported before it) in `cwd`, the checkout by
  default."""
  return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                        timeout=300, check=False)


def test_tasks_package_is_installed(tmp_path):
  """From a folder outside the checkout, `import samtone_jax.tasks` registers the sources'
  tasks, and the quickstart vocabulary that the package carries is there."""
  done = _fresh_python(
      "import pathlib, seqio\n"
      "from samtone_jax.tasks import vocabularies\n"
      "seqio.get_mixture_or_task('stdlib_code_search')\n"
      "seqio.get_mixture_or_task('msmarco_passage')\n"
      "assert pathlib.Path(vocabularies.QUICKSTART_PATH).is_file(), vocabularies.QUICKSTART_PATH",
      cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-3000:]


def test_importing_the_library_leaves_tensorflow_and_stderr_alone():
  """The model and loss import no TensorFlow and print nothing: entry points set TensorFlow
  up (launch.setup_host), not the package."""
  done = _fresh_python("import sys; import samtone_jax.losses, samtone_jax.dual_encoder;"
                       " assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stderr == ""


def test_no_library_module_imports_the_tasks():
  """Every module of samtone_jax/ imports without the user-extensible tasks/: the library
  never depends on the sources that register into it. (An editable install lists the
  installed folders tasks/ and gin_configs/ among the package's modules: they are not
  library modules.)"""
  done = _fresh_python(
      "import importlib, pkgutil, sys; import samtone_jax\n"
      "for module in pkgutil.iter_modules(samtone_jax.__path__):\n"
      "  if module.name in ('tasks', 'gin_configs'): continue\n"
      "  importlib.import_module(f'samtone_jax.{module.name}')\n"
      "  tasks = sorted(m for m in sys.modules if m.startswith('samtone_jax.tasks'))\n"
      "  assert not tasks, f'samtone_jax.{module.name} imports {tasks}'")
  assert done.returncode == 0, done.stderr[-3000:]


@gin.configurable
def _loss_options(temperature=gin.REQUIRED, same_tower=gin.REQUIRED,
                  bidirectional=gin.REQUIRED, pair_alpha=gin.REQUIRED):
  return dict(temperature=temperature, same_tower=same_tower, bidirectional=bidirectional,
              pair_alpha=pair_alpha)


@pytest.mark.parametrize("name", LOSS_GIN_FILES)
def test_loss_gin_files_set_valid_options(name):
  """Each shipped losses/*.gin sets every loss macro, to values the loss accepts, with the
  temperature of runs/train.gin."""
  path = samtone_jax.GIN_CONFIGS_DIR / "losses" / f"{name}.gin"
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([str(path)], ["TEMPERATURE = 0.01"] + [
        f"_loss_options.{arg} = %{arg.upper()}"
        for arg in ("temperature", "same_tower", "bidirectional", "pair_alpha")])
    options = _loss_options()
  finally:
    gin.clear_config()
  assert options["bidirectional"]
  want = {"in_batch_softmax": ("none", 0.0), "samtone": ("query", 0.0),
          "samtone_document": ("document", 0.0), "samtone_both": ("both", 0.0),
          "pair": ("none", 0.1)}[name]
  assert (options["same_tower"], options["pair_alpha"]) == want
  loss, _ = losses.contrastive_loss(jnp.eye(2), jnp.eye(2), **options)
  assert jnp.isfinite(loss)
