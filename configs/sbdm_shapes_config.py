"""Function-space score diffusion on the embedded shapes at 32² (CPU-sized): an FNO score network (12 modes),
the VP SDE (β 0.1 + 19.9 t) with the Laplacian prior (s = 2), Euler–Maruyama sampling (200 steps).

A starting point for the Multilevel Diffusion / CNO family's runs (:mod:`infdiff.pipeline.sbdm_configs`);
its settings are not tuned.  ``experiments/sbdm_cpu_table.py`` trains the FNO and CNO with both priors
at 16² and scores them.
"""

from infdiff.pipeline.sbdm_configs import sbdm_config


def get_config():
    config = sbdm_config("shapes", 32, network="fno", prior="laplacian", experiment="sbdm_shapes_32")
    config.model.modes = 12
    config.prior.s = 2.0
    return config
