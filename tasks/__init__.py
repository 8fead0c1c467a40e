"""SeqIO task registrations, installed as `samtone_jax.tasks`.

Each data source has a module of its own here; importing this package registers them all.
"""
