"""Tests for the EfficientNet-Lite0 SavedModel contract, its builder and the torch-free checkpoint reader."""

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2

from model import build, torch_pickle
from model.efficientnet_lite import EfficientNetLite0, block_configs
from model.preprocess import Preprocessing, decode, to_model_input
from tests.model.golden import make_golden

CATS = ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")

# Photo -> (loader, acceptable top-1 classes, minimum probability mass on them). The floors sit
# below what the chosen preprocessing measured: 0.92, 0.97, 0.43, 0.72, 0.97.
PHOTOS = {
    "chelsea": (skimage.data.chelsea, CATS, 0.8),
    "coffee": (skimage.data.coffee, ("espresso", "cup", "coffee mug"), 0.9),
    "rocket": (skimage.data.rocket, ("missile", "projectile", "space shuttle"), 0.3),
    "motorcycle": (lambda: skimage.data.stereo_motorcycle()[0], ("moped", "motor scooter"), 0.6),
    "camera": (skimage.data.camera, ("tripod", "reflex camera"), 0.9),
}


def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def classify(serve, images: list[bytes]) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in serve(images=tf.constant(images, tf.string)).items()}


def top1(serve, labels, image: bytes) -> str:
    return labels[classify(serve, [image])["top_k_classes"][0, 0]]


# -- SavedModel layout and signature --------------------------------------------------------------


def test_layout(model_dir):
    assert model_dir.name == build.MODEL_VERSION and model_dir.parent.name == build.MODEL_NAME
    assert (model_dir / "saved_model.pb").is_file()
    assert (model_dir / "variables" / "variables.index").is_file()
    assert (model_dir / "assets" / "imagenet_labels.txt").is_file()


def test_signature(serve):
    (spec,) = serve.structured_input_signature[1].values()
    assert list(serve.structured_input_signature[1]) == ["images"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    outputs = serve.structured_outputs
    assert set(outputs) == {"scores", "top_k_scores", "top_k_classes", "embedding"}
    assert (outputs["embedding"].dtype, outputs["embedding"].shape.as_list()) == (tf.float32, [None, 1280])
    assert (outputs["scores"].dtype, outputs["scores"].shape.as_list()) == (tf.float32, [None, 1000])
    assert (outputs["top_k_scores"].dtype, outputs["top_k_scores"].shape.as_list()) == (tf.float32, [None, 5])
    assert (outputs["top_k_classes"].dtype, outputs["top_k_classes"].shape.as_list()) == (tf.int32, [None, 5])


def test_only_standard_ops(model_dir):
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((model_dir / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    assert {"DecodeJpeg", "DecodeImage", "ResizeBicubic", "Softmax", "TopKV2"} <= ops


def test_labels_asset(model_dir, loaded, labels):
    asset = model_dir / "assets" / "imagenet_labels.txt"
    lines = asset.read_text(encoding="utf-8").splitlines()
    assert lines == labels and len(lines) == 1000 and len(set(lines)) == 1000
    assert lines[208] == "Labrador retriever" and lines[281] == "tabby" and lines[967] == "espresso"
    assert os.path.samefile(loaded.labels.asset_path.numpy().decode(), asset)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((model_dir / "saved_model.pb").read_bytes())
    assert [a.filename for a in saved.meta_graphs[0].asset_file_def] == ["imagenet_labels.txt"]


def test_describe(loaded, model_dir):
    info = {key: value.numpy().decode() for key, value in loaded.describe().items()}
    assert info["name"] == "efficientnet_lite0" and info["version"] == "1"
    assert "EfficientNet-Lite0" in info["description"]
    assert os.path.samefile(info["labels_file"], model_dir / "assets" / "imagenet_labels.txt")


# -- predictions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOS)
def test_photo_top1(serve, labels, name):
    load, expected, min_mass = PHOTOS[name]
    out = classify(serve, [encode(load())])
    assert labels[out["top_k_classes"][0, 0]] in expected
    scores = out["scores"][0]
    assert sum(scores[labels.index(label)] for label in expected) > min_mass


def test_chelsea_is_a_cat_with_high_mass(serve, labels):
    scores = classify(serve, [encode(skimage.data.chelsea(), "JPEG", quality=95)])["scores"][0]
    assert sum(scores[labels.index(cat)] for cat in CATS) > 0.85


@pytest.mark.parametrize("name", ["coffee", "motorcycle", "camera"])
def test_formats_agree(serve, labels, name):
    array = PHOTOS[name][0]()
    files = {
        "JPEG": encode(array, "JPEG", quality=90),
        "PNG": encode(array, "PNG"),
        "BMP": encode(array, "BMP"),
        "GIF": encode(array, "GIF"),
        "WEBP": encode(array, "WEBP", quality=90),
        "WEBP lossless": encode(array, "WEBP", lossless=True),
    }
    out = classify(serve, list(files.values()))
    assert {labels[c] for c in out["top_k_classes"][:, 0]} == {labels[out["top_k_classes"][0, 0]]}


def test_gif_uses_first_frame(serve, labels):
    coffee = Image.fromarray(skimage.data.coffee())
    camera = Image.fromarray(skimage.data.camera()).convert("RGB").resize(coffee.size)
    buffer = io.BytesIO()
    camera.save(buffer, "GIF", save_all=True, append_images=[coffee], duration=100, loop=0)
    assert top1(serve, labels, buffer.getvalue()) in PHOTOS["camera"][1]


def test_alpha_and_grayscale_inputs_decode(serve):
    logo = skimage.data.logo()  # RGBA
    images = [encode(logo, "PNG"), encode(logo, "WEBP"), encode(skimage.data.camera(), "JPEG")]
    assert classify(serve, images)["scores"].shape == (3, 1000)


def test_batch_matches_single(serve):
    images = [encode(load()) for load, *_ in PHOTOS.values()]
    batched = classify(serve, images)
    for i, image in enumerate(images):
        single = classify(serve, [image])
        np.testing.assert_allclose(batched["scores"][i], single["scores"][0], atol=1e-5)
        np.testing.assert_array_equal(batched["top_k_classes"][i], single["top_k_classes"][0])


def test_scores_are_probabilities_and_top_k_consistent(serve):
    out = classify(serve, [encode(load()) for load, *_ in PHOTOS.values()])
    scores = out["scores"]
    assert np.all(scores >= 0)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["top_k_classes"][:, 0], scores.argmax(axis=1))
    np.testing.assert_allclose(np.take_along_axis(scores, out["top_k_classes"], 1), out["top_k_scores"])
    assert np.all(np.diff(out["top_k_scores"], axis=1) <= 0)


def test_empty_batch(serve):
    out = classify(serve, [])
    assert out["scores"].shape == (0, 1000) and out["top_k_classes"].shape == (0, 5)


def test_undecodable_input_is_an_error(serve):
    with pytest.raises(tf.errors.InvalidArgumentError):
        classify(serve, [b"definitely not an image"])


def test_large_jpeg_uses_dct_downscaling_without_changing_top1(serve, labels):
    big = Image.fromarray(skimage.data.coffee()).resize((2400, 1600), Image.LANCZOS)
    data = encode(np.asarray(big), "JPEG", quality=92)
    assert decode(data).shape[:2] == (400, 600)  # ratio 4: ratio 8 would drop the short side below 224
    full = decode(data, Preprocessing(jpeg_downscale=False))
    assert full.shape[:2] == (1600, 2400)
    assert top1(serve, labels, data) == top1(serve, labels, encode(full.numpy())) == "espresso"


def test_jpeg_ratio_keeps_short_side_at_least_the_crop_source():
    min_side = Preprocessing().min_decoded_side
    for height, width in [(300, 451), (447, 800), (448, 448), (1024, 700), (4000, 3000), (8000, 6000)]:
        short = min(decode(encode(np.zeros((height, width, 3), np.uint8), "JPEG")).shape[:2])
        assert short >= min(min_side, height, width)
        # The largest ratio (8) is used whenever it still fits.
        assert short < 2 * min_side or min(height, width) // 8 >= min_side


# -- builder --------------------------------------------------------------------------------------


def test_block_layout_read_from_weights(weights):
    configs = block_configs(weights)
    assert [c.kernel for c in configs] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [i for i, c in enumerate(configs) if c.stride == 2] == [1, 3, 5, 11]
    assert [c.has_skip for c in configs].count(True) == 9
    assert not configs[0].has_expand and all(c.has_expand for c in configs[1:])


def test_layout_mismatch_is_rejected(weights):
    broken = {k: v for k, v in weights.items() if not k.startswith("_blocks.15.")}
    with pytest.raises(ValueError, match="blocks"):
        block_configs(broken)
    with pytest.raises(ValueError, match="squeeze-excite"):
        block_configs({**weights, "_blocks.1._se_reduce.weight": np.zeros(1)})


def test_bn_folding_matches_unfolded_reference(weights):
    """Stem conv + folded BN equals conv followed by inference batch norm."""
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    kernel = weights["_conv_stem.weight"].transpose(2, 3, 1, 0)
    y = tf.nn.conv2d(x, kernel, 2, "SAME")
    bn = {k: weights[f"_bn0.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    y = tf.nn.batch_normalization(y, bn["running_mean"], bn["running_var"], bn["bias"], bn["weight"], 1e-3)
    net = EfficientNetLite0(weights)
    np.testing.assert_allclose(net.stem(x), tf.nn.relu6(y), atol=1e-4)


# -- torch-free checkpoint reader -----------------------------------------------------------------


class FakeStorage:
    """Raw storage written as a persistent id, as torch.save does."""

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data


class FakeTensor:
    def __init__(self, storage: FakeStorage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-in torch modules so pickle can write torch globals by name without torch."""
    torch_module, utils_module = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_module._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch_module, name, type(name, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)
    return torch_module


def write_checkpoint(torch_module, state: dict, storages: list[FakeStorage], zip_format: bool) -> bytes:
    types_by_dtype = {np.dtype(np.float32): torch_module.FloatStorage, np.dtype(np.int64): torch_module.LongStorage}

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, FakeStorage):
                return None
            pid = ("storage", types_by_dtype[obj.data.dtype], obj.key, "cpu", obj.data.size)
            return pid if zip_format else (*pid, None)

    body = io.BytesIO()
    Writer(body, protocol=2).dump(state)
    if zip_format:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("archive/data.pkl", body.getvalue())
            archive.writestr("archive/byteorder", "little")
            for storage in storages:
                archive.writestr(f"archive/data/{storage.key}", storage.data.tobytes())
        return out.getvalue()
    header = b"".join(
        pickle.dumps(obj, protocol=2)
        for obj in (torch_pickle.LEGACY_MAGIC, torch_pickle.LEGACY_PROTOCOL, {"little_endian": True})
    )
    raw = b"".join(struct.pack("<q", s.data.size) + s.data.tobytes() for s in storages)
    return header + body.getvalue() + pickle.dumps([s.key for s in storages], protocol=2) + raw


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
def test_reader_rebuilds_strided_tensors(fake_torch, zip_format):
    floats = FakeStorage("140001", np.arange(24, dtype=np.float32))
    count = FakeStorage("140002", np.array([7], dtype=np.int64))
    state = collections.OrderedDict(
        transposed=FakeTensor(floats, 2, (3, 4), (1, 3)),
        whole=FakeTensor(floats, 0, (2, 3, 4), (12, 4, 1)),
        scalar=FakeTensor(count, 0, (), ()),
    )
    data = write_checkpoint(fake_torch, state, [floats, count], zip_format)
    result = torch_pickle.load_bytes(data)
    expected = np.arange(24, dtype=np.float32)[2:][np.arange(3)[:, None] + 3 * np.arange(4)[None, :]]
    np.testing.assert_array_equal(result["transposed"], expected)
    np.testing.assert_array_equal(result["whole"], np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert result["scalar"].dtype == np.int64 and result["scalar"].shape == () and result["scalar"] == 7


def test_reader_rejects_out_of_bounds_view(fake_torch):
    floats = FakeStorage("1", np.arange(4, dtype=np.float32))
    data = write_checkpoint(fake_torch, {"t": FakeTensor(floats, 2, (4,), (1,))}, [floats], zip_format=True)
    with pytest.raises(pickle.UnpicklingError, match="out of bounds"):
        torch_pickle.load_bytes(data)


class Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.parametrize("where", ["first pickle", "legacy state dict", "zip data.pkl"])
def test_reader_refuses_non_allow_listed_globals(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"weight": Exploit(marker)}, protocol=2)
    if where == "first pickle":
        data = evil
    elif where == "legacy state dict":
        data = b"".join(pickle.dumps(o, protocol=2) for o in (torch_pickle.LEGACY_MAGIC, 1001, {})) + evil
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("archive/data.pkl", evil)
        data = buffer.getvalue()
    with pytest.raises(pickle.UnpicklingError, match="not allow-listed"):
        torch_pickle.load_bytes(data)
    assert not marker.exists()


def test_reader_loads_package_checkpoint(weights):
    assert len(weights) == 296
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3) and weights["_conv_stem.weight"].dtype == np.float32
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(v).all() for v in weights.values())


# -- PyTorch cross-check against committed reference data (tests/model/golden/make_golden.py) ------


def model_inputs() -> np.ndarray:
    """The test photos as the model sees them: PNG bytes decoded and prepared by the serving preprocessing."""
    return np.stack([to_model_input(decode(encode(load()))).numpy() for load, *_ in PHOTOS.values()])


@pytest.fixture(scope="module")
def golden():
    with np.load(make_golden.LOGITS_FILE) as data:
        return {key: data[key] for key in data.files}


def test_reader_reads_the_checkpoint_as_pytorch_does(weights, golden):
    expected = dict(zip(golden["weight_names"].tolist(), golden["weight_sha256"].tolist(), strict=True))
    assert {key: make_golden.tensor_digest(value) for key, value in weights.items()} == expected


def test_logits_match_pytorch_reference(weights, golden):
    assert golden["photos"].tolist() == list(PHOTOS), "regenerate tests/model/golden after changing PHOTOS"
    expected = golden["logits"]
    actual = EfficientNetLite0(weights)(model_inputs()).numpy()
    max_diff = np.abs(actual - expected).max()
    print(f"max abs logit difference vs PyTorch {golden['torch_version']}: {max_diff:.2e}")
    assert max_diff < 1e-3
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("zip_format", ["legacy", "zip"])
def test_reader_matches_torch_save(zip_format):
    loaded = torch_pickle.load_state_dict(make_golden.GOLDEN / f"torch_save_{zip_format}.pth")
    expected = make_golden.tiny_expected()
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
