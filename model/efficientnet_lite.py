"""EfficientNet-Lite0 as plain TensorFlow ops, built from a lukemelas-style PyTorch weight dict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

# TF-trained EfficientNets (and the PyTorch ports of their checkpoints) use this epsilon.
BN_EPSILON = 1e-3

# EfficientNet-B0 stages as (repeats, kernel, stride, expand_ratio, out_channels). Lite0 keeps
# this layout; strides are not visible in the weights, everything else is checked against them.
B0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
PADDINGS = ("tf_same", "symmetric")


@dataclass(frozen=True)
class BlockConfig:
    """One MBConv block: 1x1 expand (optional), depthwise, 1x1 project."""

    index: int
    in_channels: int
    expanded: int
    out_channels: int
    kernel: int
    stride: int

    @property
    def has_expand(self) -> bool:
        return self.expanded != self.in_channels

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def expected_blocks() -> list[tuple[int, int, int, int]]:
    """(kernel, stride, expand_ratio, out_channels) per block of the B0 layout."""
    blocks = []
    for repeats, kernel, stride, expand, out in B0_STAGES:
        blocks += [(kernel, stride if i == 0 else 1, expand, out) for i in range(repeats)]
    return blocks


def block_configs(weights: dict[str, np.ndarray]) -> list[BlockConfig]:
    """Reads each block's shape from the weights and checks it against the B0/Lite0 layout."""
    expected = expected_blocks()
    count = len({key.split(".")[1] for key in weights if key.startswith("_blocks.")})
    if count != len(expected):
        raise ValueError(f"checkpoint has {count} blocks, EfficientNet-Lite0 has {len(expected)}")
    if any("_se_" in key for key in weights):
        raise ValueError("checkpoint has squeeze-excite weights: not an EfficientNet-Lite model")
    if weights["_conv_stem.weight"].shape[0] != STEM_CHANNELS:
        raise ValueError("unexpected stem width")
    configs, in_channels = [], STEM_CHANNELS
    for i, (kernel, stride, expand, out) in enumerate(expected):
        depthwise = weights[f"_blocks.{i}._depthwise_conv.weight"]
        project = weights[f"_blocks.{i}._project_conv.weight"]
        config = BlockConfig(i, in_channels, depthwise.shape[0], project.shape[0], depthwise.shape[2], stride)
        if (config.kernel, config.expanded, config.out_channels) != (kernel, in_channels * expand, out):
            raise ValueError(f"block {i} does not match the EfficientNet-Lite0 layout: {config}")
        if config.has_expand != (f"_blocks.{i}._expand_conv.weight" in weights):
            raise ValueError(f"block {i}: expand conv presence does not match its channel counts")
        configs.append(config)
        in_channels = out
    if weights["_conv_head.weight"].shape[:2] != (HEAD_CHANNELS, in_channels):
        raise ValueError("unexpected head shape")
    return configs


def fold_batch_norm(kernel: np.ndarray, weights: dict[str, np.ndarray], bn: str, out_axis: int):
    """Folds inference-mode batch norm into the preceding conv: returns (kernel, bias)."""
    gamma, beta = weights[f"{bn}.weight"].astype(np.float64), weights[f"{bn}.bias"].astype(np.float64)
    mean, var = weights[f"{bn}.running_mean"].astype(np.float64), weights[f"{bn}.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + BN_EPSILON)
    shape = [1] * kernel.ndim
    shape[out_axis] = -1
    folded = kernel.astype(np.float64) * scale.reshape(shape)
    return folded.astype(np.float32), (beta - mean * scale).astype(np.float32)


class ConvBN(tf.Module):
    """Conv (regular or depthwise) with batch norm folded in, optionally followed by ReLU6."""

    def __init__(self, weights, conv: str, bn: str, stride=1, depthwise=False, relu6=True, padding="tf_same"):
        super().__init__(name=conv.strip("_").replace(".", "_"))
        torch_kernel = weights[f"{conv}.weight"]
        # PyTorch OIHW -> TF HWIO; depthwise C1HW -> HWC1 (channel multiplier 1).
        kernel = torch_kernel.transpose(2, 3, 0, 1) if depthwise else torch_kernel.transpose(2, 3, 1, 0)
        kernel, bias = fold_batch_norm(kernel, weights, bn, out_axis=2 if depthwise else 3)
        self.kernel = tf.Variable(kernel, trainable=False, name="kernel")
        self.bias = tf.Variable(bias, trainable=False, name="bias")
        self.size, self.stride, self.depthwise, self.relu6 = kernel.shape[0], stride, depthwise, relu6
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}")
        self.padding = padding

    def __call__(self, x):
        x = self._pad(x)
        pad = "SAME" if self._same else "VALID"
        if self.depthwise:
            x = tf.nn.depthwise_conv2d(x, self.kernel, [1, self.stride, self.stride, 1], pad)
        else:
            x = tf.nn.conv2d(x, self.kernel, self.stride, pad)
        x = tf.nn.bias_add(x, self.bias)
        return tf.nn.relu6(x) if self.relu6 else x

    @property
    def _same(self) -> bool:
        # For stride 1 odd kernels, TF SAME already pads symmetrically.
        return self.padding == "tf_same" or self.stride == 1

    def _pad(self, x):
        if self._same:
            return x
        p = self.size // 2
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])


class MBConv(tf.Module):
    """Inverted residual block without squeeze-excite, as in EfficientNet-Lite."""

    def __init__(self, weights, config: BlockConfig, padding: str):
        super().__init__(name=f"block_{config.index}")
        prefix = f"_blocks.{config.index}."
        self.config = config
        self.expand = None
        if config.has_expand:
            self.expand = ConvBN(weights, prefix + "_expand_conv", prefix + "_bn0", padding=padding)
        self.depthwise = ConvBN(
            weights, prefix + "_depthwise_conv", prefix + "_bn1", config.stride, depthwise=True, padding=padding
        )
        self.project = ConvBN(weights, prefix + "_project_conv", prefix + "_bn2", relu6=False, padding=padding)

    def __call__(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.config.has_skip else y


class EfficientNetLite0(tf.Module):
    """Maps normalised float32 images [N, H, W, 3] to ImageNet logits [N, 1000], through pooled features."""

    def __init__(self, weights: dict[str, np.ndarray], padding: str = "tf_same"):
        super().__init__(name="efficientnet_lite0")
        self.stem = ConvBN(weights, "_conv_stem", "_bn0", stride=2, padding=padding)
        self.blocks = [MBConv(weights, config, padding) for config in block_configs(weights)]
        self.head = ConvBN(weights, "_conv_head", "_bn1", padding=padding)
        self.fc_kernel = tf.Variable(weights["_fc.weight"].T.copy(), trainable=False, name="fc_kernel")
        self.fc_bias = tf.Variable(weights["_fc.bias"], trainable=False, name="fc_bias")

    def __call__(self, images):
        return self.classify(self.features(images))

    def features(self, images):
        """The globally pooled head activations [N, 1280]: what the photo looks like, before the classes."""
        x = self.stem(images)
        for block in self.blocks:
            x = block(x)
        return tf.reduce_mean(self.head(x), axis=[1, 2])

    def classify(self, features):
        return tf.matmul(features, self.fc_kernel) + self.fc_bias
