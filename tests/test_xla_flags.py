"""The XLA flags the entry points set: added to XLA_FLAGS unless the user names them, and
taken by XLA:CPU (the memory-minimising schedule holds less temporary memory)."""

import os
import subprocess
import sys

from samtone_jax import xla_flags

_PROGRAM = """
import jax, jax.numpy as jnp
from samtone_jax import xla_flags
if {set_defaults}:
  xla_flags.set_cpu_defaults()
def loss(ws, x):
  for w1, w2 in ws:
    x = x + jax.nn.gelu(x @ w1) @ w2
  return (x ** 2).sum()
x = jax.ShapeDtypeStruct((1024, 128), jnp.float32)
ws = [(jax.ShapeDtypeStruct((128, 512), jnp.float32),
       jax.ShapeDtypeStruct((512, 128), jnp.float32))] * 6
print(jax.jit(jax.grad(loss)).lower(ws, x).compile().memory_analysis().temp_size_in_bytes)
"""


def test_defaults_are_added_and_a_users_own_value_kept(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  xla_flags.set_cpu_defaults()
  assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=8",
                                             *xla_flags.CPU_DEFAULTS]
  xla_flags.set_cpu_defaults()  # idempotent
  assert len(os.environ["XLA_FLAGS"].split()) == 1 + len(xla_flags.CPU_DEFAULTS)
  mine = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
  monkeypatch.setenv("XLA_FLAGS", mine)
  xla_flags.set_cpu_defaults()
  assert os.environ["XLA_FLAGS"] == mine
  monkeypatch.delenv("XLA_FLAGS")
  xla_flags.set_cpu_defaults()
  assert os.environ["XLA_FLAGS"] == " ".join(xla_flags.CPU_DEFAULTS)


def test_xla_takes_the_flags_after_jax_is_imported():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  temp = {}
  for set_defaults in (False, True):
    out = subprocess.run([sys.executable, "-c", _PROGRAM.format(set_defaults=set_defaults)],
                         env=env, check=True, capture_output=True, text=True).stdout
    temp[set_defaults] = int(out.split()[-1])
  assert temp[True] < temp[False], temp
