"""The SavedModel's serving contract: signatures, input keys and size, outputs; read by the build and its callers.

Plain constants so the services can read them without importing TensorFlow.
"""

# Encoded image files in, decoded, cropped and resized in the graph: for whoever calls TF Serving directly.
ENCODED_SIGNATURE = "serving_default"
ENCODED_INPUT = "images"  # tf.string [N]

# Pixels prepared by the caller (see services/inference/pixels.py): the model only normalises and classifies.
PIXELS_SIGNATURE = "predict_pixels"
PIXELS_INPUT = "pixels"  # tf.uint8 [N, IMAGE_SIZE, IMAGE_SIZE, 3], RGB, upright, full centre square, resized
IMAGE_SIZE = 224

# Both signatures return the same outputs.
SCORES_OUTPUT = "scores"  # float32 [N, NUM_CLASSES], softmax
TOP_K_SCORES_OUTPUT = "top_k_scores"  # float32 [N, TOP_K]
TOP_K_CLASSES_OUTPUT = "top_k_classes"  # int32 [N, TOP_K]
NUM_CLASSES = 1000
TOP_K = 5

# TF Serving's warm-up file, relative to the version directory: a TFRecord of PredictionLog messages.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
