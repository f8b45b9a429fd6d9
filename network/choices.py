"""The names the model builder accepts, without TensorFlow (the settings are checked against
them before TensorFlow is imported)."""

from __future__ import annotations

# Keras activations and initializers by name.
ACTIVATIONS = (
    "elu", "relu", "selu", "gelu", "silu", "swish", "tanh", "sigmoid", "softplus", "softsign",
    "leaky_relu", "relu6", "mish", "linear", "exponential", "hard_sigmoid", "hard_silu",
)  # fmt: skip
INITIALIZERS = (
    "he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal",
    "lecun_uniform", "orthogonal", "random_normal", "random_uniform", "truncated_normal",
    "variance_scaling",
)  # fmt: skip
# The transforms of InputSanitizerLayer: name -> what it does (the NumPy versions and the
# graph in network.custom.input_sanitizer must agree).
TRANSFORMS = {
    "none": "x",
    "abs": "|x|",
    "log1p": "log1p(max(x, 0))",
    "abs_log1p": "log1p(|x|)",
    "signed_log1p": "sign(x) * log1p(|x|)",
    "log": "log(max(x, 1e-10))",
    "abs_log": "log(max(|x|, 1e-10))",
}
