"""Model server settings: TAGSMITH_* environment variables, overridden by TensorFlow Serving's own flag names."""

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import Field

from services.common import settings as common_settings
from services.common.settings import ServiceSettings

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# BatchingParameters fields this server honours; TF Serving wraps each in { value: N }.
BATCHING_FIELDS = {"max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"}


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU limit (a container's)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, count)


class Settings(ServiceSettings):
    """Where the models are, how to batch, and how many threads TensorFlow may use."""

    host: str = Field("0.0.0.0", description="Interface the gRPC server binds to.")
    port: int = Field(8500, ge=0, le=65535, description="gRPC port (TF Serving's default); 0 picks a free one.")
    metrics_port: int | None = Field(9105, ge=0, le=65535, description="Prometheus /metrics port; unset disables it.")
    model_name: str = Field("default", description="Name served when model_base_path is one model's directory.")
    model_base_path: Path = Field(
        Path("models"), description="One model's directory (numeric version subdirs) or a parent of several."
    )
    model_config_file: Path | None = Field(None, description="Text-format ModelServerConfig; replaces the two above.")
    enable_batching: bool = Field(True, description="Merge concurrent Predict calls into one model call.")
    max_batch_size: int = Field(32, ge=1, le=4096, description="Largest merged batch, in examples.")
    batch_timeout_micros: int = Field(
        0, ge=0, description="How long a batch may wait for more calls once the model is free (TF Serving: 0)."
    )
    num_batch_threads: int = Field(
        default_factory=available_cpus,
        ge=1,
        le=64,
        description="Batches run at the same time per model version; default one per CPU the process may use.",
    )
    max_enqueued_batches: int = Field(
        64, ge=1, description="Queued batches per model version before Predict answers UNAVAILABLE."
    )
    intra_op_threads: int = Field(
        1,
        ge=0,
        description="TensorFlow threads within one op. 1 costs the least CPU per image: batches run side by side "
        "instead (num_batch_threads); 0 lets TensorFlow choose.",
    )
    inter_op_threads: int = Field(
        default_factory=available_cpus,
        ge=0,
        description="TensorFlow threads running ops side by side; default one per CPU; 0 lets TensorFlow choose.",
    )
    enable_model_warmup: bool = Field(
        True, description="Run each version's assets.extra/tf_serving_warmup_requests before serving it."
    )
    port_file: Path | None = Field(None, description="Write the bound gRPC port here once serving (for --port 0).")


def _flag_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.modelserver", description="TensorFlow Serving compatible gRPC model server."
    )
    add = parser.add_argument
    add("--port", type=int, help="gRPC port (default 8500); 0 picks a free one")
    add("--host", help="interface to bind (default 0.0.0.0)")
    add("--port_file", type=Path, help="write the bound port to this file once serving")
    add("--model_name", help="name of the model in --model_base_path (default 'default')")
    add("--model_base_path", type=Path, help="a model directory with numeric versions, or a parent of several")
    add("--model_config_file", type=Path, help="text-format ModelServerConfig listing the models")
    add("--enable_batching", type=_flag_bool, nargs="?", const=True, help="merge concurrent Predict calls")
    add("--batching_parameters_file", type=Path, help="text-format BatchingParameters")
    add("--max_batch_size", type=int, help="largest merged batch")
    add("--batch_timeout_micros", type=int, help="how long a batch waits for more calls")
    add("--num_batch_threads", type=int, help="batches run at once per model version")
    add("--tensorflow_intra_op_parallelism", dest="intra_op_threads", type=int, help="TensorFlow intra-op threads")
    add("--tensorflow_inter_op_parallelism", dest="inter_op_threads", type=int, help="TensorFlow inter-op threads")
    add("--enable_model_warmup", type=_flag_bool, nargs="?", const=True, help="run the SavedModel's warm-up file")
    add("--metrics_port", type=int, help="Prometheus /metrics port")
    # Accepted so TF Serving command lines run unchanged; this server has no REST API and loads models once.
    add("--rest_api_port", type=int, dest="ignored_rest_api_port", help="accepted and ignored (no REST API)")
    add("--file_system_poll_wait_seconds", type=int, dest="ignored_poll", help="accepted and ignored")
    return parser


def parse_batching_parameters(text: str) -> dict[str, int]:
    """Reads TF Serving's BatchingParameters text format (`max_batch_size { value: 32 }`, or `max_batch_size: 32`)."""
    values: dict[str, int] = {}
    tokens = text.replace("{", " { ").replace("}", " } ").replace(":", " : ").split()
    for index, token in enumerate(tokens):
        if token not in BATCHING_FIELDS:
            continue
        following = [t for t in tokens[index + 1 : index + 5] if t not in ("{", ":", "value")]
        try:
            values[token] = int(following[0])
        except (IndexError, ValueError):
            raise ValueError(f"batching parameters: no integer value for {token}") from None
    return values


class Overrides(NamedTuple):
    """Settings given by flags and a batching parameters file, and where each came from (for error messages)."""

    values: dict[str, Any]
    sources: dict[str, str]


def flag_overrides(argv: Sequence[str]) -> Overrides:
    """The settings TF Serving's flags give, over those of a batching parameters file; the environment gives the
    rest. An unreadable batching file raises ValueError."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    skipped = {"batching_parameters_file", "ignored_rest_api_port", "ignored_poll"}
    flags = {key: value for key, value in args.items() if value is not None and key not in skipped}
    # A setting's flag, e.g. intra_op_threads -> --tensorflow_intra_op_parallelism.
    flag_names = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    overrides = Overrides(flags, {key: flag_names[key] for key in flags})
    batching_file = args.get("batching_parameters_file")
    if batching_file is None:
        return overrides
    try:
        text = batching_file.read_text()
    except OSError as exc:
        raise ValueError(f"batching parameters file {batching_file}: {exc.strerror}") from None
    from_file = parse_batching_parameters(text)
    return Overrides(
        {**from_file, **overrides.values},
        {**{key: f"{key} in {batching_file}" for key in from_file}, **overrides.sources},
    )


def load_settings(argv: Sequence[str]) -> Settings:
    """Environment first, then a batching parameters file, then flags, checked by the shared loader."""
    overrides = flag_overrides(argv)
    return common_settings.load_settings(Settings, sources=overrides.sources, **overrides.values)


def model_config_text(base_paths: dict[str, Path]) -> str:
    """A text-format ModelServerConfig serving each named model from its directory (TF Serving reads the same)."""
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{path}"\n    model_platform: "tensorflow"\n  }}\n'
        for name, path in base_paths.items()
    )
    return f"model_config_list {{\n{entries}}}\n"
