"""Code shared by training, serving and monitoring: schema, settings, registry, model store.

It imports no other part of the project.
"""

__version__ = "0.1.0"
