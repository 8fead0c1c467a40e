"""The activations' default dtype: the rule by backend and CPU flags, gin's override, and the
'auto' of the model files resolved on this machine."""

import logging
import pathlib

import jax
import jax.numpy as jnp
import pytest

from samtone_jax import dtypes, launch, t5

# /proc/cpuinfo flags of real CPUs (abridged to what matters and a few neighbours).
AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_bf16"}  # AMD Zen 4, Intel Cooper Lake
AMX = AVX512_BF16 | {"amx_bf16", "amx_tile", "amx_int8"}  # Intel Sapphire Rapids
AMX_ONLY = AVX2_ONLY | {"amx_bf16", "amx_tile"}
ON_CPU = pytest.mark.skipif(jax.default_backend() != "cpu", reason="JAX's backend is not a CPU")


@pytest.mark.parametrize("backend, flags, want", [
    ("gpu", None, "bfloat16"),
    ("tpu", None, "bfloat16"),
    ("gpu", AVX2_ONLY, "bfloat16"),  # the host's CPU does not matter
    ("cpu", AVX512_BF16, "bfloat16"),
    ("cpu", AMX, "bfloat16"),
    ("cpu", AMX_ONLY, "bfloat16"),
    ("cpu", AVX2_ONLY, "float32"),
    ("cpu", AVX2_ONLY | {"avx512f", "avx512bw", "amx_tile"}, "float32"),  # no bfloat16 units
    ("cpu", set(), "float32"),  # Linux without x86 flags (an ARM CPU's are "Features")
    ("cpu", None, "float32"),  # unreadable: no /proc/cpuinfo
    ("METAL", None, "float32"),
])
def test_the_rule(backend, flags, want):
  dtype, why = dtypes.default_activation_dtype(backend, flags)
  assert dtype == want
  assert why


@pytest.mark.parametrize("backend, flags, words", [
    ("gpu", None, ["GPU"]),
    ("tpu", None, ["TPU"]),
    ("cpu", AVX512_BF16, ["AVX512-BF16"]),
    ("cpu", AMX_ONLY, ["AMX"]),
    ("cpu", AVX2_ONLY, ["without AVX512-BF16 or AMX"]),
    ("cpu", None, ["could not be read", "/proc/cpuinfo"]),
])
def test_the_reason_names_what_decided(backend, flags, words):
  _, why = dtypes.default_activation_dtype(backend, flags)
  for word in words:
    assert word in why


def test_cpu_flags_from_a_cpuinfo_file(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                  "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n")
  assert dtypes.cpuinfo(info) == {"processor": "0", "model name": "AMD EPYC",
                                  "flags": "fpu avx2 avx512_bf16"}
  assert dtypes.cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
  assert dtypes.cpu_flags(tmp_path / "missing") is None


@pytest.fixture
def undecided():
  """`dtypes.activation_dtype()` decides afresh in the test, and again after it."""
  dtypes.activation_dtype.cache_clear()
  yield
  dtypes.activation_dtype.cache_clear()


@pytest.fixture
def machine(monkeypatch, undecided):  # pylint: disable=unused-argument
  """`machine(flags)` makes `dtypes.activation_dtype()` see these CPU flags (None:
  unreadable)."""
  return lambda flags: monkeypatch.setattr(dtypes, "cpu_flags", lambda path=None: flags)


@pytest.fixture
def records():
  """The log records of samtone_jax.dtypes (its parent may not propagate to pytest's)."""
  got = []
  handler = logging.Handler(logging.INFO)
  handler.emit = got.append
  logger = logging.getLogger("samtone_jax.dtypes")
  logger.addHandler(handler)
  level = logger.level
  logger.setLevel(logging.INFO)
  yield got
  logger.removeHandler(handler)
  logger.setLevel(level)


def _gin_model(*bindings):
  model, _ = launch.read_run(["models/t5_1_1_small.gin"], [], bindings)
  return model


@ON_CPU
@pytest.mark.parametrize("flags, want", [(AVX2_ONLY, "float32"), (AMX, "bfloat16"),
                                         (None, "float32")])
def test_auto_in_the_model_files_follows_the_machine(machine, records, flags, want):
  machine(flags)
  assert _gin_model().config.dtype == jnp.dtype(want)
  assert _gin_model().config.dtype == jnp.dtype(want)  # decided and logged once
  assert [r.getMessage().split(" (")[0] for r in records] == [f"Activation dtype: {want}"]


@pytest.mark.parametrize("flags", [AVX2_ONLY, AMX])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gin_overrides_the_machine(machine, records, flags, dtype):
  machine(flags)
  config = _gin_model(f"ACTIVATION_DTYPE = '{dtype}'").config
  assert config.dtype == jnp.dtype(dtype) and config.param_dtype == jnp.float32
  assert not records  # nothing was left to the machine


@ON_CPU
def test_auto_on_this_machine(undecided, records):  # pylint: disable=unused-argument
  """The real CPU's flags, read here by hand: float32 on this project's CPU without
  AVX-512, bfloat16 where AVX512-BF16 or AMX is there."""
  try:
    flags = pathlib.Path("/proc/cpuinfo").read_text().split()
  except OSError:
    flags = []
  want = "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "float32"
  assert t5.T5Config(dtype="auto").dtype == jnp.dtype(want)
  message = records[0].getMessage()
  assert message.startswith(f"Activation dtype: {want} (CPU ")


def test_a_bad_dtype_names_auto():
  with pytest.raises(ValueError, match=r"T5Config.dtype='automatic'.*'auto'"):
    t5.T5Config(dtype="automatic")
