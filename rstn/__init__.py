"""rstn: a reproducible replication of Recurrent Spatial Transformer Networks.

Modules, one job each, listed so that each imports only modules above it:
    configs      how a config field reads in records that predate it; fields that never change a result
    mnist        fetch and verify the MNIST pickle the authors used
    data         the cluttered-MNIST-sequence generator and its on-disk cache
    sampler      grid generator and samplers (STN eqs. 1-5), PyTorch and equation versions
    models       conv_net, ffn_spn(d), rnn_spn(d): the Table 1 models
    optim        Lasagne's RMSprop, the gradient constraints, the learning-rate schedule
    backends     the device, TF32/cuDNN settings, CPU memory tuning
    progress     per-epoch lines and ETAs, progress within an epoch, durations
    checkpoints  checkpoints and resume packs (resume.pt): what a run in progress needs to continue
    weights      trained weights as safetensors files
    train        the authors' training protocol (fit): metrics, checkpoints, exact resume, deadlines
    experiments  the Table 1 registry: rows, profiles, the resolved config of a run
    results      the typed run record (run.json) and Table 1 from the records
    attention    normalised <-> pixel coordinates, glimpse boxes, IoU, the saved attention of runs
    runs         one run on disk (train_run: skip, resume, time budget; load_trained) and many in a row
    sweep        (row x seed) jobs through submitit, locally or on Slurm; results packed to travel
    viz          figures and tables for the book
    explorers    the interactive affine and attention explorers (HTML/JS, ipywidgets)
    papermap     each equation of the papers mapped to its code and test
    book         executing the chapters with papermill
    cli          the `rstn` command
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`rstn.load_trained(row, profile="paper", seed=0)`: imported on first use (it needs torch)."""
    if name == "load_trained":
        from rstn.runs import load_trained

        return load_trained
    raise AttributeError(f"module 'rstn' has no attribute {name!r}")
