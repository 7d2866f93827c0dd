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
EMBEDDING_OUTPUT = "embedding"  # float32 [N, EMBEDDING_SIZE], pooled features before the classifier, L2-normalised
NUM_CLASSES = 1000
TOP_K = 5
EMBEDDING_SIZE = 1280

# The models TF Serving serves side by side, by name (their directories under the model base path).
CLASSIFIER_MODEL = "efficientnet_lite0"
FACE_MODEL = "face_detector"
SERVED_MODELS = (CLASSIFIER_MODEL, FACE_MODEL)

# The face detector's serving_default signature (model/face_detector.py).
FACE_SIGNATURE = "serving_default"
FACE_INPUT = "pixels"  # tf.uint8 [N, FACE_INPUT_SIZE, FACE_INPUT_SIZE, 3], RGB, the upright image letterboxed
FACE_INPUT_SIZE = 192
FACE_BOXES_OUTPUT = "boxes"  # float32 [N, MAX_FACES, 4]: xmin, ymin, xmax, ymax in fractions of the input
FACE_SCORES_OUTPUT = "scores"  # float32 [N, MAX_FACES]; rows past count are zero
FACE_COUNT_OUTPUT = "count"  # int32 [N]

# The bundled model server (services/modelserver) names itself in this gRPC response header of GetModelMetadata;
# TF Serving sends none. It tells inference, and so GET /model, which server actually serves the model.
MODEL_SERVER_HEADER = "tagsmith-model-server"
TF_SERVING = "TensorFlow Serving"

# TF Serving's warm-up file, relative to the version directory: a TFRecord of PredictionLog messages.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
