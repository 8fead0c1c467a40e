# Marks the shipped gin files as the package `samtone_jax.gin_configs`, so that they are
# installed with the library and found with importlib.resources from any working directory.
