"""rstn: a reproducible replication of Recurrent Spatial Transformer Networks.

Modules, one concern each:
    mnist        fetch and verify the MNIST pickle the authors used
    data         the cluttered-MNIST-sequence generator and its on-disk cache
    sampler      grid generator and samplers (STN eqs. 1-5), PyTorch and equation versions
    models       conv_net, ffn_spn(d), rnn_spn(d): the Table 1 models
    train        the authors' training protocol, checkpoints, resume
    experiments  the Table 1 registry, run profiles, the results schema
    viz          figures and the interactive explorers
    cli          the `rstn` command line
"""

__version__ = "0.1.0"
