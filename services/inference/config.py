"""Inference settings, read from TAGSMITH_* environment variables."""

from pathlib import Path

from pydantic import Field, model_validator

from services.common.model_contract import CLASSIFIER_MODEL, FACE_MODEL, PIXELS_INPUT, PIXELS_SIGNATURE
from services.common.settings import ServiceSettings, TokenSettings

# The label list the model is built from; container images copy it to the same place beside services/.
DEFAULT_LABELS_FILE = Path(__file__).resolve().parents[2] / "model" / "imagenet_labels.txt"
MIB = 1024 * 1024
# Measured on scikit-image photos and composites (docs/images-and-search.md, "People in photos").
FACE_SCORE_THRESHOLD = 0.6


class Settings(ServiceSettings, TokenSettings):
    """Where TensorFlow Serving is, what the model looks like, and the limits Classify enforces."""

    port: int = Field(50054, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(9104, ge=0, le=65535, description="Prometheus /metrics port; unset disables it.")
    tfserving_addr: str = Field(
        "127.0.0.1:8500", description="TensorFlow Serving gRPC address: host:port, a list a:1,b:2, or dns:///name:port."
    )
    model_name: str = Field(CLASSIFIER_MODEL, min_length=1, description="Model name sent in every ModelSpec.")
    signature_name: str = Field(
        PIXELS_SIGNATURE, description="SavedModel signature to call; it takes uint8 RGB [N, 224, 224, 3]."
    )
    input_key: str = Field(PIXELS_INPUT, description="Signature input holding the decoded pixels.")
    scores_output: str = Field("scores", description="Signature output with the [N, classes] probabilities.")
    embedding_output: str = Field(
        "embedding", description="Signature output with the image embedding for similar photos; empty: not asked for."
    )
    face_model_name: str = Field(
        FACE_MODEL,
        description="Face detector served beside the classifier; empty switches face detection off (answers then "
        "say faces were not analysed).",
    )
    face_score_threshold: float = Field(
        FACE_SCORE_THRESHOLD,
        ge=0.5,
        le=1,
        description="Detector score a face needs to be reported and tagged; the detector itself drops faces below 0.5.",
    )
    labels_file: Path = Field(DEFAULT_LABELS_FILE, description="Class names, one per line; line index = class id.")
    max_bytes: int = Field(25 * MIB, ge=1, description="Largest accepted upload, in bytes.")
    max_pixels: int = Field(50_000_000, ge=1, description="Largest accepted width x height, checked from the header.")
    tag_threshold: float = Field(0.1, ge=0, le=1, description="Labels scoring at least this become search tags.")
    batch_max_size: int = Field(32, ge=1, le=1024, description="Most images sent in one Predict call.")
    batch_max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Extra wait for more images once a Predict slot is free; while every slot is busy images "
        "queue anyway, so 0 already batches under load without delaying a lone image.",
    )
    batch_max_linger_ms: float = Field(
        10.0,
        ge=0,
        le=1000,
        description="Longest a batch waits for more images while other calls are still uploading or TF Serving "
        "is busy anyway; a lone call to an idle TF Serving never waits.",
    )
    batch_max_bytes: int = Field(
        32 * MIB, ge=1, description="Most image bytes in one Predict call; a single larger image is sent alone."
    )
    batch_max_in_flight: int = Field(
        3,
        ge=1,
        le=64,
        description="Predict calls outstanding at once; one more than TF Serving's num_batch_threads keeps a "
        "batch queued there, so it never waits for this service.",
    )
    cache_size: int = Field(4096, ge=0, description="Results remembered by image SHA-256; 0 disables the cache.")
    predict_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest wait for TF Serving; a caller's earlier deadline shortens it."
    )
    decode_threads: int = Field(2, ge=1, le=64, description="Threads decoding images off the event loop.")
    large_decode_mib: int = Field(
        48,
        ge=1,
        description="A decode allocating more than this (a full-size PNG, GIF, HEIC, AVIF or progressive JPEG "
        "of many megapixels) is a large decode.",
    )
    max_large_decodes: int = Field(
        1,
        ge=1,
        le=64,
        description="Large decodes running at once; each takes up to 4 bytes per pixel of the pixel limit "
        "(200 MB at 50 MP), so this bounds the service's memory.",
    )

    @model_validator(mode="after")
    def _labels_file_exists(self) -> "Settings":
        if not self.labels_file.is_file():
            raise ValueError(f"labels file {self.labels_file} does not exist (set TAGSMITH_LABELS_FILE)")
        return self
