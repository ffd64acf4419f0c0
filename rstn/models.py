"""The Table 1 models: ``rnn_spn(d)``, ``ffn_spn(d)`` and ``conv_net()`` (RNN-SPN paper, Sect. 3-4, appendix).

Built as the authors' code builds them (``rnn_spn.py``, ``ffn_spn.py``; PROTOCOL.md "Models"). Where the
paper's appendix differs, the code is the default and the paper's variant is a :class:`ModelConfig` field.
Lasagne defaults that the code relied on and that hold here: every conv and Dense layer has a ReLU except
the theta regression and the softmax layers; 3x3 convs with valid padding; 2x2 max-pooling that drops a
ragged border (floor); Glorot-uniform weights and zero biases; inverted dropout.

Every model maps an image x (B, 1, 100, 100) to ``ModelOutput(logits (B, 3, 10), theta)``; logits are
pre-softmax and float32 (also under autocast).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rstn.configs import added
from rstn.sampler import METHODS, transform

KINDS = ("rnn_spn", "ffn_spn", "conv_net")
LOCALISATION_CHANNELS = 20  # paper: "All convolutional layers [of the localisation networks] had 20 filters"
CLASSIFIER_CHANNELS = {"rnn_spn": 32, "ffn_spn": 96, "conv_net": 96}  # paper Sect. 4: 32 (RNN-SPN), 96
IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class ModelConfig:
    """Every knob of the three models; the defaults are the authors' code."""

    kind: str  # "rnn_spn" | "ffn_spn" | "conv_net"
    d: int = 1  # down-sampling factor: glimpses of floor(input_size / d) pixels; ignored by conv_net
    steps: int = 3  # digits per sequence: GRU steps (RNN-SPN) or separate softmax heads (FFN-SPN, conv net)
    n_classes: int = 10
    classifier_dense: int = 400  # paper: Dense(256) for RNN-SPN (appendix 6.1); code: 400 in both models
    dropout: float = 0.0  # code default; the paper tuned it on validation without publishing the values
    gru_hidden: int = 256
    # code: rnn_spn.py leaves GRULayer's learn_init at Lasagne's default, True until Lasagne PR #497
    # (2015-11-12, after the paper): h0 is a trainable (1, 256) parameter that starts at zero.
    # False gives the fixed zero state of later Lasagne versions. Records from before this field ran with
    # the fixed zero state: they read as False.
    gru_learn_init: bool = added(True, absent=False)
    ffn_loc_dense: int = 200
    sampler: str = "torch"  # "torch" | "equations" | "lasagne2015" (the paper's own runs; see rstn.sampler)
    input_size: int = 100
    # paper: dropout(p) between the last classifier conv and Dense (appendix); code: none there (ffn_spn.py
    # builds that dropout but feeds the Dense from the conv before it)
    dropout_before_dense: bool = False
    # code (rnn_spn.py): dropout after the second localisation conv; not in the paper, absent in ffn_spn.py,
    # so only the RNN-SPN reads this field
    localisation_dropout: bool = True
    # Extensions, the paper's future work (Sect. 6), in our design, not the paper's (RNN-SPN only):
    # glimpses_per_digit k: the GRU runs steps * k steps; the shared classifier reads every glimpse, and each
    # digit's logits come from the head on the mean of its k glimpses' dense features.
    glimpses_per_digit: int = 1
    # glimpse_feedback: from the second step on, the GRU's input is the localisation features and the dense
    # features the classifier computed from the previous glimpse (zeros before the first).
    glimpse_feedback: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "conv_net" and not (isinstance(self.d, int) and self.d >= 1):
            raise ValueError(f"d must be an integer >= 1, got {self.d!r}")
        if not (isinstance(self.glimpses_per_digit, int) and self.glimpses_per_digit >= 1):
            raise ValueError(f"glimpses_per_digit must be an integer >= 1, got {self.glimpses_per_digit!r}")
        if self.kind != "rnn_spn" and (self.glimpses_per_digit != 1 or self.glimpse_feedback):
            raise ValueError("glimpses_per_digit and glimpse_feedback are RNN-SPN's: its recurrence makes them")
        if self.steps < 1 or self.n_classes < 2:
            raise ValueError(f"need steps >= 1 and n_classes >= 2, got {self.steps}, {self.n_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.sampler not in METHODS:
            raise ValueError(f"sampler must be one of {METHODS}, got {self.sampler!r}")
        if self.kind != "conv_net" and localisation_size(self.input_size) < 1:
            raise ValueError(f"input_size {self.input_size} is too small for the localisation network")
        if classifier_size(self.glimpse_size) < 1:
            raise ValueError(
                f"a {self.glimpse_size}x{self.glimpse_size} glimpse (input {self.input_size}, d={self.d}) is "
                "too small for the classifier's three valid 3x3 convs and two 2x2 pools"
            )

    @property
    def glimpse_size(self) -> int:
        """Side of the classifier's input: floor(input_size / d), or input_size for the conv net."""
        return self.input_size if self.kind == "conv_net" else self.input_size // self.d


class ModelOutput(NamedTuple):
    logits: Tensor  # (B, steps, n_classes), pre-softmax, float32
    theta: Tensor | None  # (B, T, 2, 3) float32: T = steps (RNN-SPN), 1 (FFN-SPN); None for the conv net


def localisation_size(n: int) -> int:
    """Side after pool, conv, pool, conv, pool, conv (valid 3x3, floor pools): 100 -> 9."""
    for _ in range(3):
        n = n // 2 - 2
    return n


def classifier_size(n: int) -> int:
    """Side after conv, pool, conv, pool, conv (valid 3x3, floor pools): 100, 50, 33, 25 -> 21, 9, 4, 2."""
    return ((n - 2) // 2 - 2) // 2 - 2


def glorot(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    # code: Lasagne's GlorotUniform weights (gain 1; same fans as xavier_uniform_) and zero biases
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def conv_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(glorot(nn.Conv2d(c_in, c_out, kernel_size=3)), nn.ReLU())


def conv(c_in: int, c_out: int) -> nn.Sequential:
    """A 3x3 valid conv whose ReLU comes after the max-pool that follows it (`pool_relu`)."""
    return nn.Sequential(glorot(nn.Conv2d(c_in, c_out, kernel_size=3)))


def pool_relu() -> nn.Sequential:
    """2x2 max-pool, then ReLU: the same outputs and gradients as ReLU then pool, on a quarter of the values.

    Max-pooling commutes with ReLU (both monotone), and with dropout's non-negative scaling in between;
    where the window's max is <= 0 both orders pass a zero gradient. Running the ReLU (and its backward)
    after the pool made a CPU training step of rnn-spn-d2 about 1.3x faster (benchmarks/README.md).
    """
    return nn.Sequential(nn.MaxPool2d(2), nn.ReLU())


def dense_relu(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(glorot(nn.Linear(n_in, n_out)), nn.ReLU())


class Localisation(nn.Sequential):
    """The localisation trunk: x (B, 1, S, S) -> features (B, 20 n^2); n = 9, 1,620 features for S = 100."""

    def __init__(self, input_size: int, dropout: float, dropout_after_second_conv: bool) -> None:
        c = LOCALISATION_CHANNELS
        # code: pool, conv-ReLU, pool, conv-ReLU, [dropout], pool, conv-ReLU; each ReLU that a pool follows
        # runs after it (`pool_relu`), the same function, and the parameter names are unchanged
        layers: list[nn.Module] = [nn.MaxPool2d(2), conv(1, c), pool_relu(), conv(c, c)]
        if dropout_after_second_conv:
            layers.append(nn.Dropout(dropout))
        layers += [pool_relu(), conv_relu(c, c), nn.Flatten()]
        super().__init__(*layers)
        self.n_features = c * localisation_size(input_size) ** 2


class Classifier(nn.Sequential):
    """conv-pool-dropout, conv-pool-dropout, conv, Dense + ReLU: glimpses (N, 1, h, h) -> (N, dense)."""

    def __init__(self, channels: int, glimpse: int, dense: int, dropout: float, dropout_before_dense: bool):
        c = channels
        layers: list[nn.Module] = [  # code: conv-ReLU-pool; the ReLU runs after the pool (`pool_relu`)
            conv(1, c), pool_relu(), nn.Dropout(dropout),
            conv(c, c), pool_relu(), nn.Dropout(dropout),
            conv_relu(c, c), nn.Flatten(),
        ]
        if dropout_before_dense:
            layers.append(nn.Dropout(dropout))
        layers.append(dense_relu(c * classifier_size(glimpse) ** 2, dense))
        super().__init__(*layers)


class ThetaRegression(nn.Linear):
    """Dense(6), linear, initialised to the identity transform: zero weights, bias [1, 0, 0, 0, 1, 0]."""

    def __init__(self, n_in: int) -> None:
        super().__init__(n_in, 6)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        with torch.no_grad():
            self.bias.copy_(torch.tensor(IDENTITY_THETA))


class GRU(nn.Module):
    """GRU (Chung et al., 2014) in Lasagne's GRULayer form, fed the same features at every step.

    r = sigmoid(W_xr x + W_hr h + b_r), u = sigmoid(W_xu x + W_hu h + b_u),
    c = tanh(W_xc x + r * (W_hc h) + b_c), h' = (1 - u) h + u c.
    One bias per gate: 768 parameters fewer than torch.nn.GRU, which also has b_hn inside r * (...).
    The initial state h0 starts at zero; with `learn_init` it is a trainable (1, hidden) parameter
    (Lasagne's `learn_init=True`), otherwise a constant zero.
    """

    def __init__(self, n_in: int, hidden: int, learn_init: bool = True) -> None:
        super().__init__()
        initial = torch.zeros(1, hidden)
        if learn_init:
            self.initial_state = nn.Parameter(initial)
        else:
            self.register_buffer("initial_state", initial, persistent=False)
        self.input_weight = nn.Parameter(torch.empty(n_in, 3 * hidden))  # columns: reset | update | candidate
        self.hidden_weight = nn.Parameter(torch.empty(hidden, 3 * hidden))
        self.bias = nn.Parameter(torch.zeros(3 * hidden))
        # code: Lasagne Gate defaults, weights Normal(std 0.1), biases 0
        nn.init.normal_(self.input_weight, std=0.1)
        nn.init.normal_(self.hidden_weight, std=0.1)

    def forward(self, features: Tensor, steps: int) -> Tensor:
        """features (B, F) -> hidden states (B, steps, hidden)."""
        projected = torch.addmm(self.bias, features, self.input_weight)  # the same every step
        h = self.initial(features.shape[0])
        states = []
        for _ in range(steps):
            h = self.step(h, projected)
            states.append(h)
        return torch.stack(states, dim=1)

    def initial(self, batch: int) -> Tensor:
        """h0 (batch, hidden)."""
        return self.initial_state.expand(batch, -1)

    def step(self, h: Tensor, projected: Tensor) -> Tensor:
        """One step: h (B, hidden) and the projected input b + W_x x (B, 3 hidden) -> the next h."""
        x_r, x_u, x_c = projected.chunk(3, -1)
        h_r, h_u, h_c = (h @ self.hidden_weight).chunk(3, -1)
        r, u = torch.sigmoid(x_r + h_r), torch.sigmoid(x_u + h_u)
        return (1 - u) * h + u * torch.tanh(x_c + r * h_c)


class SeparateHeads(nn.Module):
    """``steps`` independent Dense(n_classes) layers on one input: (B, dense) -> (B, steps, n_classes)."""

    def __init__(self, dense: int, n_classes: int, steps: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(glorot(nn.Linear(dense, n_classes)) for _ in range(steps))

    def forward(self, features: Tensor) -> Tensor:
        return torch.stack([head(features) for head in self.heads], dim=1)


class Table1Model(nn.Module):
    """What the three models share: the input check, ``set_dropout`` and ``uses_element_clipping``."""

    uses_element_clipping = False  # code: only rnn_spn.py clips every gradient element to [-1, 1]
    ramps_dropout = False  # code: only rnn_spn.py ramps a nonzero dropout in over the first epochs

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def set_dropout(self, p: float) -> None:
        """Set the drop probability of every dropout layer (the trainer ramps it over the first epochs)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p

    def check_input(self, x: Tensor) -> None:
        size = self.config.input_size
        if x.ndim != 4 or x.shape[1:] != (1, size, size) or not x.is_floating_point():
            raise ValueError(
                f"expected a float image batch (B, 1, {size}, {size}), got {x.dtype} {tuple(x.shape)}"
            )

    def glimpse(self, x: Tensor, theta: Tensor) -> Tensor:
        """x (B, 1, S, S), theta (N, 2, 3) with N = B * T -> glimpses (N, 1, g, g), float32 in every case.

        Sampling positions need float32 precision (bf16 resolves 1/128 near 1: about 0.4 px on 100 px).
        """
        g = self.config.glimpse_size
        repeats = theta.shape[0] // x.shape[0]
        with torch.autocast(device_type=x.device.type, enabled=False):
            image = x.float().repeat_interleave(repeats, dim=0) if repeats > 1 else x.float()
            return transform(image, theta.float(), size=(g, g), method=self.config.sampler)


class RNNSPN(Table1Model):
    """RNN-SPN: a GRU predicts one theta per digit; one classifier, shared over steps, reads each glimpse."""

    uses_element_clipping = True
    ramps_dropout = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.localisation = Localisation(config.input_size, config.dropout, config.localisation_dropout)
        feedback = config.classifier_dense if config.glimpse_feedback else 0  # the extension's extra input
        self.gru = GRU(self.localisation.n_features + feedback, config.gru_hidden, config.gru_learn_init)
        self.theta = ThetaRegression(config.gru_hidden)
        self.classifier = Classifier(
            CLASSIFIER_CHANNELS["rnn_spn"], config.glimpse_size, config.classifier_dense, config.dropout,
            config.dropout_before_dense,
        )
        self.head = glorot(nn.Linear(config.classifier_dense, config.n_classes))

    def forward(self, x: Tensor) -> ModelOutput:
        """x (B, 1, 100, 100) -> logits (B, T, 10), theta (B, T k, 2, 3), T = steps, k = glimpses_per_digit."""
        self.check_input(x)
        if self.config.glimpses_per_digit > 1 or self.config.glimpse_feedback:
            return self._forward_extended(x)
        batch, steps = x.shape[0], self.config.steps
        features = self.localisation(x)  # RNN-SPN eq. (5): c = f_conv(I), (B, 1620)
        # the where-to-look path is cheap: keep it in float32 under autocast
        with torch.autocast(device_type=x.device.type, enabled=False):
            # RNN-SPN eq. (6): h_t = f_rnn(c, h_{t-1})
            hidden = self.gru(features.float(), steps)  # (B, T, 256)
            theta = self.theta(hidden).reshape(batch, steps, 2, 3)  # RNN-SPN eq. (7): A_theta = g(h_t)
        # all T glimpses in one sampler call, then one classifier pass: (B*T, 1, g, g)
        glimpses = self.glimpse(x, theta.reshape(batch * steps, 2, 3))
        logits = self.head(self.classifier(glimpses))  # (B*T, 10)
        return ModelOutput(logits.float().reshape(batch, steps, -1), theta)

    def _forward_extended(self, x: Tensor) -> ModelOutput:
        """The extensions (ours): k glimpses per digit pooled before the head, and/or each glimpse's dense
        features fed back into the GRU. With feedback the steps run one after another (glimpse t decides
        the input of step t + 1); without it all T k glimpses go through one classifier pass."""
        batch, k, digits = x.shape[0], self.config.glimpses_per_digit, self.config.steps
        features = self.localisation(x)  # (B, F)
        if not self.config.glimpse_feedback:
            with torch.autocast(device_type=x.device.type, enabled=False):
                theta = self.theta(self.gru(features.float(), digits * k)).reshape(batch, digits * k, 2, 3)
            dense = self.classifier(self.glimpse(x, theta.reshape(-1, 2, 3)))  # (B T k, D)
        else:
            h = self.gru.initial(batch)
            previous = features.new_zeros(batch, self.config.classifier_dense, dtype=torch.float32)
            thetas, denses = [], []
            for _ in range(digits * k):
                with torch.autocast(device_type=x.device.type, enabled=False):
                    step_input = torch.cat([features.float(), previous.float()], dim=1)  # (B, F + D)
                    h = self.gru.step(h, torch.addmm(self.gru.bias, step_input, self.gru.input_weight))
                    theta = self.theta(h).reshape(batch, 2, 3)
                previous = self.classifier(self.glimpse(x, theta))  # (B, D)
                thetas.append(theta)
                denses.append(previous)
            theta = torch.stack(thetas, dim=1)  # (B, T k, 2, 3)
            dense = torch.stack(denses, dim=1).reshape(batch * digits * k, -1)
        pooled = dense.reshape(batch, digits, k, -1).mean(dim=2)  # each digit: the mean of its k glimpses
        logits = self.head(pooled)  # (B, T, 10)
        return ModelOutput(logits.float(), theta)


class FFNSPN(Table1Model):
    """FFN-SPN: one theta, one glimpse (which must hold all digits), three separate softmax heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        # code: no localisation dropout in ffn_spn.py
        self.localisation = Localisation(config.input_size, config.dropout, dropout_after_second_conv=False)
        self.localisation_dense = dense_relu(self.localisation.n_features, config.ffn_loc_dense)
        self.theta = ThetaRegression(config.ffn_loc_dense)
        self.classifier = Classifier(
            CLASSIFIER_CHANNELS["ffn_spn"], config.glimpse_size, config.classifier_dense, config.dropout,
            config.dropout_before_dense,
        )
        self.heads = SeparateHeads(config.classifier_dense, config.n_classes, config.steps)

    def forward(self, x: Tensor) -> ModelOutput:
        """x (B, 1, 100, 100) -> logits (B, 3, 10), theta (B, 1, 2, 3)."""
        self.check_input(x)
        hidden = self.localisation_dense(self.localisation(x))  # (B, 200)
        with torch.autocast(device_type=x.device.type, enabled=False):
            theta = self.theta(hidden.float()).reshape(-1, 2, 3)  # STN eq. (1)'s A_theta, (B, 2, 3)
        logits = self.heads(self.classifier(self.glimpse(x, theta)))
        return ModelOutput(logits.float(), theta.unsqueeze(1))


class ConvNet(Table1Model):
    """The conv net baseline: the FFN-SPN's classifier and heads on the raw image, no transformer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.classifier = Classifier(
            CLASSIFIER_CHANNELS["conv_net"], config.input_size, config.classifier_dense, config.dropout,
            config.dropout_before_dense,
        )
        self.heads = SeparateHeads(config.classifier_dense, config.n_classes, config.steps)

    def forward(self, x: Tensor) -> ModelOutput:
        """x (B, 1, 100, 100) -> logits (B, 3, 10), theta None."""
        self.check_input(x)
        return ModelOutput(self.heads(self.classifier(x)).float(), None)


def build_model(config: ModelConfig) -> Table1Model:
    """The model for ``config``; ``forward(x (B, 1, 100, 100)) -> ModelOutput``."""
    return {"rnn_spn": RNNSPN, "ffn_spn": FFNSPN, "conv_net": ConvNet}[config.kind](config)


def rnn_spn(d: int = 1, **kw) -> Table1Model:
    return build_model(ModelConfig(kind="rnn_spn", d=d, **kw))


def ffn_spn(d: int = 1, **kw) -> Table1Model:
    return build_model(ModelConfig(kind="ffn_spn", d=d, **kw))


def conv_net(**kw) -> Table1Model:
    return build_model(ModelConfig(kind="conv_net", **kw))


def relu_before_pool(model: nn.Module) -> nn.Module:
    """A copy of `model` in the authors' layer order, conv-ReLU-pool, with the same weights.

    The reference for the test that `pool_relu` changes nothing, and the baseline of the CPU speed
    benchmark (benchmarks/bench_train.py --compare).
    """
    import copy

    reference = copy.deepcopy(model)
    for trunk in (m for m in reference.modules() if isinstance(m, nn.Sequential)):
        for i, layer in enumerate(trunk):
            kinds = [type(m) for m in layer] if isinstance(layer, nn.Sequential) else []
            if kinds == [nn.MaxPool2d, nn.ReLU]:
                trunk[i] = layer[0]
            elif kinds == [nn.Conv2d]:
                trunk[i] = nn.Sequential(layer[0], nn.ReLU())
    return reference


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
