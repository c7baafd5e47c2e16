"""The registry of network architectures a config's ``model.arch`` names.

An entry is a constructor whose keyword arguments are exactly the keys of the ``model`` section;
the stage that builds it adds what it derives from the data (``channels`` and ``train_size`` of
images, ``z_dim`` of latents).
"""

from infdiff.registry import Registry

ARCHS = Registry("architecture")
