"""First-request latency of the model server with and without the SavedModel's TF Serving warm-up file.

Starts `python -m services.modelserver` several times, alternately with the warm-up file honoured and with
`--enable_model_warmup=false`, and times the first three calls of each path: `predict_pixels` with 1 and 8 images,
then `serving_default` with one 12-MP JPEG. Wall time follows the load from other processes; the model server's CPU
time per call hardly does. Run: `python -m bench warmup`; figures are also written to bench/results/warmup.json.
"""

import asyncio
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from bench.inference import cpu_seconds, model_base_path
from services.common import model_contract as contract
from services.inference import tfserving
from tests.support.inference_fixtures import MODEL_NAME, start_modelserver

REPO = Path(__file__).resolve().parent.parent
STARTS = 3
CALLS = 3
DT_UINT8 = 4  # tensorflow.DataType
MODES = {"warm-up": (), "no warm-up": ("--enable_model_warmup", "false")}


def phone_jpeg() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).resize((4032, 3024), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def pixels_request(count: int):
    from skimage import data

    from services.inference.pixels import to_model_pixels

    pixels = np.repeat(to_model_pixels(Image.fromarray(data.chelsea()))[None], count, axis=0)
    request = tfserving.PredictRequest(model_spec=tfserving.ModelSpec(name=MODEL_NAME))
    request.model_spec.signature_name = contract.PIXELS_SIGNATURE
    tensor = request.inputs[contract.PIXELS_INPUT]
    tensor.dtype, tensor.tensor_content = DT_UINT8, pixels.tobytes()
    for size in pixels.shape:
        tensor.tensor_shape.dim.add(size=size)
    return request


def encoded_request(data: bytes):
    request = tfserving.PredictRequest(model_spec=tfserving.ModelSpec(name=MODEL_NAME))
    request.inputs[contract.ENCODED_INPUT].CopyFrom(tfserving.string_tensor([data]))
    return request


async def time_calls(address: str, pid: int, requests: dict) -> dict[str, list[tuple[float, float]]]:
    """(wall ms, model server CPU ms) of each call, CALLS per request, in order."""
    timings: dict[str, list[tuple[float, float]]] = {}
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = tfserving.PREDICT.callable(channel)
        for name, request in requests.items():
            timings[name] = []
            for _ in range(CALLS):
                cpu, wall = cpu_seconds(pid), time.perf_counter()
                await call(request, timeout=300)
                timings[name].append(((time.perf_counter() - wall) * 1000, (cpu_seconds(pid) - cpu) * 1000))
    return timings


def summary(starts: list[dict]) -> dict:
    """Per request: the median over starts of the first call, and of the later calls."""
    figures = {}
    for name in starts[0]:
        first = [timings[name][0] for timings in starts]
        later = [t for timings in starts for t in timings[name][1:]]
        figures[name] = {
            "first_wall_ms": statistics.median(w for w, _ in first),
            "first_cpu_ms": statistics.median(c for _, c in first),
            "later_wall_ms": statistics.median(w for w, _ in later),
            "later_cpu_ms": statistics.median(c for _, c in later),
        }
    return figures


def run() -> dict:
    requests = {
        "predict_pixels 1 image": pixels_request(1),
        "predict_pixels 8 images": pixels_request(8),
        "serving_default 12-MP JPEG": encoded_request(phone_jpeg()),
    }
    measured: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="tagsmith-bench-") as workdir:
        base = model_base_path(Path(workdir))
        for start in range(STARTS):
            for mode, flags in MODES.items():
                with start_modelserver(base, Path(workdir) / f"{start}-{len(flags)}", *flags) as (address, server):
                    measured[mode].append(asyncio.run(time_calls(address, server.pid, requests)))
    figures = {mode: summary(starts) for mode, starts in measured.items()}
    for mode, by_request in figures.items():
        for name, f in by_request.items():
            print(
                f"{mode:>10} {name:<28} first call {f['first_wall_ms']:6.0f} ms, {f['first_cpu_ms']:4.0f} CPU ms; "
                f"later calls {f['later_wall_ms']:6.0f} ms, {f['later_cpu_ms']:4.0f} CPU ms"
            )
    out = REPO / "bench" / "results" / "warmup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    run()
