"""Function-space score diffusion on PDEBench-style 2-D fields at 32² (CPU-sized), as configs/sbdm_shapes_config.py:
an FNO score network, the VP SDE (β 0.1 + 19.9 t) with the Laplacian prior (s = 2), Euler–Maruyama sampling.

The file is given on the command line (h5py needed: ``pip install infdiff[pde]``)::

    python experiments/train_sbdm.py --config configs/sbdm_pdebench_config.py \\
        --config.data.root_dir=/data/pdebench/2D_diff-react_NA_NA.h5

Every snapshot of every training trajectory is a sample (PDEBench's split: the first 10% of the
trajectories are held out), each field normalised to [-1, 1] over the file, resampled to 32² (4×4
cell averages of a 128² grid).  ``--config.data.fields=density,pressure`` (flat files) or
``--config.data.fields=0`` (grouped files: channel indices) picks fields, which sets the channels;
``--config.data.time_index=-1`` keeps the last snapshot of each trajectory, ``time_stride=10`` every
tenth.  Sample pictures show each channel as its own grey image.  Not tuned.
"""

from infdiff.pipeline.sbdm_configs import sbdm_config


def get_config():
    config = sbdm_config("pdebench", 32, network="fno", prior="laplacian", experiment="sbdm_pdebench_32")
    config.data.update(fields=None, test_fraction=0.1, time_index=None, time_stride=1)
    config.model.modes = 12
    config.prior.s = 2.0
    return config
