"""The authors' training protocol as a config (`TrainConfig`), its early-stopping rule and its per-model rules.

The protocol (PROTOCOL.md, "Training"; `rnn_spn.py` / `ffn_spn.py` of the authors' code) is the default of
`TrainConfig`: batches of 100 reshuffled every epoch, RMSprop lr 5e-4 rho 0.9 with eps 1e-6 inside the
square root (`rstn.optim`), gradients clipped to [-1, 1] element-wise and then to total norm 5 for RNN-SPN
(total norm 5 only for the others), lr / 1.5 after epochs 31, 43, 55, ..., early stopping after 50 epochs
without a gain in validation accuracy, at most 300 epochs, loss = mean over the B x 3 digits of
-log(softmax + 1e-5). Epochs are numbered from 0, as in the scripts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from rstn.configs import added, neutral
from rstn.optim import learning_rate


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the trainer; the defaults are the authors' code (PROTOCOL.md, "Training").

    The paper's text gives none of these values: it says only that the models were trained with RMSprop
    and that d and the dropout rate were chosen on the validation set.
    """

    batch_size: int = 100
    max_epochs: int = 300  # NUM_EPOCH
    patience: int = 50  # LOOK_AHEAD: stop after 50 epochs without a gain in validation accuracy
    lr: float = 5e-4  # paper: "trained with RMSprop" (Tieleman & Hinton, 2012), no values given
    rho: float = 0.9
    eps: float = 1e-6  # inside the square root (Lasagne's rmsprop)
    max_grad_norm: float = 5.0  # MAX_NORM, lasagne.updates.total_norm_constraint
    # "model": element clipping where model.uses_element_clipping (RNN-SPN in the code); "always"; "never".
    element_clip: str = "model"
    element_clip_value: float = 1.0  # T.clip(g, -1, 1)
    lr_first_decay_epoch: int = 31  # lr / factor after this epoch (the scripts' -nodecay 30)...
    lr_decay_every: int = 12  # ...and every 12 epochs after (-decayinterval 10 with a `>` test)
    lr_decay_factor: float = 1.5
    softmax_tol: float = 1e-5  # TOL: the loss is -log(softmax + 1e-5); 0 gives plain cross-entropy
    # "model": a nonzero dropout grows linearly from 0 over the first `dropout_ramp_epochs` epochs where
    # model.ramps_dropout (RNN-SPN: rnn_spn.py ramps, ffn_spn.py sets the rate once); "always"; "never".
    # Records from before this field ramped every model: they read as "always".
    dropout_ramp: str = added("model", absent="always")
    dropout_ramp_epochs: int = 5
    eval_batch_size: int = neutral(500)  # evaluation only; does not change the results
    n_attention: int = 32  # first test images whose theta and predictions are saved
    # Speed knobs (none in the authors' code).
    bf16: bool = False  # deviation when True: bf16 autocast for forward/backward
    # NHWC activations: 1.3-2x faster CPU steps with the ReLU after each pool (benchmarks/README.md); the
    # convolutions round differently, within the tolerance tests/test_speed_parity.py states
    channels_last: bool = neutral(True)
    compile: bool = neutral(False)  # torch.compile the model (on a 2-core CPU it made training steps slower)
    # torch.compile's mode: "reduce-overhead" captures CUDA graphs (a GPU step is many small kernels)
    compile_mode: str = neutral("default")
    tf32: bool = False  # TF32 matmuls/convolutions on CUDA; Theano ran in float32
    cudnn_benchmark: bool = neutral(True)  # cuDNN autotuning: speed only (can change float rounding on CUDA)

    def __post_init__(self) -> None:
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"compile_mode must be a torch.compile mode, got {self.compile_mode!r}")
        for name in ("element_clip", "dropout_ramp"):
            if getattr(self, name) not in ("model", "always", "never"):
                raise ValueError(f"{name} must be 'model', 'always' or 'never', got {getattr(self, name)!r}")
        if min(self.batch_size, self.max_epochs, self.eval_batch_size) < 1:
            raise ValueError("batch_size, max_epochs and eval_batch_size must be >= 1")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        rules = {"lr": self.lr >= 0, "rho": 0 <= self.rho < 1, "eps": self.eps >= 0,
                 "max_grad_norm": self.max_grad_norm > 0, "lr_decay_factor": self.lr_decay_factor > 0,
                 "element_clip_value": self.element_clip_value > 0, "softmax_tol": self.softmax_tol >= 0}
        bounds = {"lr": ">= 0", "rho": "in [0, 1)", "eps": ">= 0", "max_grad_norm": "> 0",
                  "lr_decay_factor": "> 0", "element_clip_value": "> 0", "softmax_tol": ">= 0"}
        # inf passes most bounds, and run.json (strict JSON) could not record it
        bad = [f"{name} must be {bounds[name]} and finite, got {getattr(self, name)}" for name, ok in rules.items()
               if not (ok and math.isfinite(getattr(self, name)))]
        if bad:
            raise ValueError("; ".join(bad))

    def lr_at(self, epoch: int) -> float:
        """Learning rate used while training (0-based) `epoch`."""
        return learning_rate(epoch, self.lr, self.lr_first_decay_epoch, self.lr_decay_every, self.lr_decay_factor)

    def dropout_at(self, epoch: int, dropout: float, ramp: bool = True) -> float:
        """Dropout probability in `epoch`: rnn_spn.py's `epoch * dropout / 5` for epoch < 5, then `dropout`.

        ramp: whether this run ramps at all (`ramps_dropout`); False gives `dropout` from epoch 0.
        """
        if not ramp or self.dropout_ramp_epochs <= 0:
            return dropout
        return dropout * min(epoch, self.dropout_ramp_epochs) / self.dropout_ramp_epochs


@dataclass
class EarlyStopping:
    """The scripts' LOOK_AHEAD counter: best = first epoch with the highest validation accuracy (strictly
    greater than every earlier one, starting from 0); stop once `patience` epochs in a row bring no gain."""

    patience: int
    best_epoch: int = -1
    best_correct: int = 0

    def update(self, epoch: int, valid_correct: int) -> bool:
        """Record an epoch's correct validation digits; True if it is the new best."""
        if valid_correct > self.best_correct:  # `if acc > best_valid` with best_valid = 0 at the start
            self.best_epoch, self.best_correct = epoch, valid_correct
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        """After `epoch` has been recorded: has the look-ahead counter run out?"""
        return epoch - self.best_epoch >= self.patience


def model_rule(setting: str, model: nn.Module, attribute: str) -> bool:
    """A TrainConfig "model" | "always" | "never" setting, "model" read from the model's `attribute`."""
    return {"always": True, "never": False}.get(setting, bool(getattr(model, attribute, False)))


def element_clip_for(config: TrainConfig, model: nn.Module) -> float | None:
    """The element-wise gradient clip of this run (None: none), by `config.element_clip` and the model."""
    return config.element_clip_value if model_rule(config.element_clip, model, "uses_element_clipping") else None


def ramps_dropout(config: TrainConfig, model: nn.Module) -> bool:
    """Whether this run ramps its dropout in, by `config.dropout_ramp` and the model."""
    return model_rule(config.dropout_ramp, model, "ramps_dropout")
