"""samtone-jax: dual-encoder retrievers trained with SamToNe, T5X-style, in JAX/Flax.

Importing the package or a module of the library sets nothing up: TensorFlow's devices, file
descriptors and the registration of tasks/ are the entry points' (launch.setup_host).
"""

import importlib.resources

__version__ = "0.1.0"

# The shipped gin files (models/, architectures/, losses/, runs/, experiments/), found from any
# working directory: entry points put this folder on gin's search path.
GIN_CONFIGS_DIR = importlib.resources.files("samtone_jax.gin_configs")
