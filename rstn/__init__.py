"""rstn: a reproducible replication of Recurrent Spatial Transformer Networks.

Modules, one job each, listed so that each imports only modules above it:
    configs      how a config field reads in records that predate it; fields that never change a result
    mnist        fetch and verify the MNIST pickle the authors used
    generator    the cluttered-MNIST-sequence generator, as the authors' code makes the sequences
    data         the sequences' on-disk cache (re-exports the generator's names)
    sampler      grid generator and samplers (STN eqs. 1-5), PyTorch and equation versions
    models       conv_net, ffn_spn(d), rnn_spn(d): the Table 1 models
    optim        Lasagne's RMSprop, the gradient constraints, the learning-rate schedule
    backends     the device, TF32/cuDNN settings, CPU memory tuning
    progress     per-epoch lines and ETAs, progress within an epoch, durations
    runlock      one process per run: the lock a run is trained under
    uncertainty  standard errors of a test error, and of the difference of two
    checkpoints  checkpoints and resume packs (resume.pt): what a run in progress needs to continue
    weights      trained weights as safetensors files
    protocol     the authors' training protocol as a config (TrainConfig), early stopping, per-model rules
    metrics      the loss and the error metrics of Table 1
    seeding      seeds and random-number state: a run is a function of its seed, a resume exact
    epoch        one epoch's training and evaluation passes over device-resident data; the deadline
    train        fit: the protocol's loop with checkpoints, exact resume and deadlines
    experiments  the Table 1 registry: rows, profiles, the resolved config of a run
    records      the typed run record (run.json), the runs of a profile, the profile to show (`best`)
    table        Table 1 from the records: ours vs the paper, the headline, the variants, the run facts
    results      records and table under one name (what the chapters import)
    claims       the paper's claims judged from the records
    glimpses     normalised <-> pixel coordinates, glimpse boxes and shapes, IoU, the attention scores
    attention_export  a model's theta and predictions on the first test images (attention.npz)
    saved_attention   the attention the runs saved, read back with their test images
    attention    glimpses, attention_export and saved_attention under one name
    trained      a finished run's weights: written, loaded (load_trained), its glimpses on the test set
    runs         one run on disk (train_run: skip, resume, time budget, locked to its process)
    runlist      many runs in a row under one time budget (train_all, train_configs), their summary
    queue        the CPU queue: its runs in order, planned for the processor it is on
    archive      results that travel in one archive (pack, unpack), never replacing a record that got further
    sweep        (row x seed) jobs through submitit, locally or on Slurm
    viz          figures and tables for the book
    explorers    the interactive affine and attention explorers (HTML/JS, ipywidgets)
    scenes       the live explorer's inputs: the generator's test digits, clutter and layout, taken apart
    live         a trained RNN-SPN run in the static page: its weights (int8 or float16), the HTML
    papermap     each equation of the papers mapped to its code and test
    book         executing the chapters with papermill
    cli_training the training subcommands of the `rstn` command (train, sweep, unpack, carry)
    cli          the `rstn` command
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`rstn.load_trained(row, profile="paper", seed=0)`: imported on first use (it needs torch)."""
    if name == "load_trained":
        from rstn.runs import load_trained

        return load_trained
    raise AttributeError(f"module 'rstn' has no attribute {name!r}")
