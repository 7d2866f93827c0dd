"""Face detection on real photos: precision and recall per score threshold, the tag rules, and ms per image.

python -m bench.faces [--model models/face_detector/1]

Photos: scikit-image's astronaut and cameraman, composites of several of them, a sideways astronaut, the 100 LFW
faces of `lfw_subset` placed on a grey page, and photos with no face (the cat, coffee, a rocket, a horse, coins,
the moon, a motorbike, text, textures, a retina, the Hubble deep field, and the 100 LFW non-face crops). A photo's
faces are known by construction, so each detection counts as found (up to the number of faces) or false.
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from services.inference.faces import Face, unletterbox
from services.inference.pixels import letterbox
from services.inference.taxonomy import face_tags

THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
NO_FACE: tuple[str, ...] = ("chelsea", "coffee", "rocket", "horse", "coins", "moon", "motorcycle", "text", "page")
NO_FACE += ("brick", "grass", "gravel", "retina", "hubble_deep_field", "immunohistochemistry", "logo", "clock", "cell")


@dataclass(frozen=True)
class Photo:
    name: str
    image: Image.Image
    faces: int
    # The tags the rules should give: person/people, portrait and group are checked.
    expected: frozenset[str]


def tiles(images: list[Image.Image], columns: int, side: int = 400) -> Image.Image:
    """Images side by side in a grid, each resized to side x side: a group photo made of portraits."""
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * side, rows * side), (90, 90, 90))
    for index, image in enumerate(images):
        sheet.paste(image.convert("RGB").resize((side, side)), ((index % columns) * side, (index // columns) * side))
    return sheet


def on_page(face: np.ndarray, side: int = 320) -> Image.Image:
    """An LFW crop (25x25, tight on the face) enlarged and placed on a grey page, as a face in a wider photo."""
    crop = Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((120, 120), Image.Resampling.BICUBIC)
    page = Image.new("RGB", (side, side), (128, 128, 128))
    page.paste(crop, ((side - 120) // 2, (side - 120) // 2))
    return page


def photos() -> list[Photo]:
    astronaut, camera = Image.fromarray(data.astronaut()), Image.fromarray(data.camera())
    flipped = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    portrait, group = frozenset({"person", "people", "portrait"}), frozenset({"person", "people", "group"})
    found = [
        Photo("astronaut", astronaut, 1, portrait),
        Photo("cameraman", camera, 1, portrait),
        Photo(
            "astronaut sideways, turned upright",
            astronaut.rotate(90, expand=True).rotate(-90, expand=True),
            1,
            portrait,
        ),
        Photo("two astronauts", tiles([astronaut, flipped], 2), 2, group),
        Photo("three people", tiles([astronaut, camera, flipped], 3), 3, group),
        Photo("four people", tiles([astronaut, flipped, camera, astronaut], 2), 4, group),
        Photo("six people", tiles([astronaut, flipped, camera] * 2, 3), 6, group),
        Photo(
            "astronaut small in a wide frame",
            tiles([astronaut], 1, 200).crop((-400, -100, 600, 300)),
            1,
            frozenset({"person", "people"}),
        ),
    ]
    lfw = data.lfw_subset()
    found += [Photo(f"lfw face {i}", on_page(lfw[i]), 1, frozenset({"person", "people"})) for i in range(100)]
    empty = [Photo(name, Image.fromarray(_image(name)), 0, frozenset()) for name in NO_FACE]
    cat = Image.fromarray(data.chelsea())
    cats = [
        cat,
        cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        cat.rotate(90, expand=True),
        cat.crop((100, 0, 350, 250)),
    ]
    empty += [Photo(f"cat {i}", image, 0, frozenset()) for i, image in enumerate(cats)]
    empty += [
        Photo("four cats", tiles(cats, 2), 0, frozenset()),
        Photo("cat and coffee", tiles([cat, Image.fromarray(data.coffee())], 2), 0, frozenset()),
    ]
    empty += [Photo(f"lfw non-face {i}", on_page(lfw[i]), 0, frozenset()) for i in range(100, 200)]
    return found + empty


def _image(name: str) -> np.ndarray:
    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    return (image * 255).astype(np.uint8) if image.dtype.kind == "f" else image


def detect_all(model_dir: Path, chosen: list[Photo]) -> tuple[list[list[Face]], float]:
    """Each photo's faces (every score >= 0.5, as the model returns them) and the ms per image at batch 1."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    signature(pixels=tf.zeros((1, 192, 192, 3), tf.uint8))  # the first call traces the graph
    results, elapsed = [], 0.0
    for photo in chosen:
        pixels, placed = letterbox(photo.image)
        batch = tf.constant(np.frombuffer(pixels, np.uint8).reshape(1, 192, 192, 3))
        started = time.perf_counter()
        out = signature(pixels=batch)
        elapsed += time.perf_counter() - started
        count = int(out["count"][0])
        boxes, scores = out["boxes"][0, :count].numpy(), out["scores"][0, :count].numpy()
        results.append([unletterbox(b, s, placed) for b, s in zip(boxes, scores, strict=True)])
    return results, elapsed * 1000 / len(chosen)


def server_ms(address: str, chosen: list[Photo], model_name: str = "face_detector") -> float:
    """The detector's ms per image through a model server (gRPC Predict, one image a call, one call at a time)."""
    import asyncio

    from services.inference.faces import FaceClient
    from services.inference.model_client import ModelClient, open_tfserving_channel

    async def run() -> float:
        channel = open_tfserving_channel(address)
        client = FaceClient(ModelClient(channel, address=address, model_name=model_name))
        inputs = [letterbox(photo.image)[0] for photo in chosen]
        await client.predict(inputs[:1], timeout=30)
        started = time.perf_counter()
        for pixels in inputs:
            await client.predict([pixels], timeout=30)
        await channel.close()
        return (time.perf_counter() - started) * 1000 / len(inputs)

    return asyncio.run(run())


def score(chosen: list[Photo], found: list[list[Face]], threshold: float) -> dict[str, float]:
    true = false = missed = tag_errors = 0
    for photo, faces in zip(chosen, found, strict=True):
        kept = [face for face in faces if face.score >= threshold]
        true += min(len(kept), photo.faces)
        false += max(0, len(kept) - photo.faces)
        missed += max(0, photo.faces - len(kept))
        checked = set(face_tags(kept)) & {"person", "people", "portrait", "group"}
        tag_errors += checked != set(photo.expected) and not photo.name.startswith("lfw")
    precision = true / (true + false) if true + false else 1.0
    return {"precision": precision, "recall": true / (true + missed), "false": false, "tag_errors": tag_errors}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faces", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/face_detector/1"))
    parser.add_argument("--verbose", action="store_true", help="print each named photo's faces")
    parser.add_argument("--modelserver", help="also time the detector through this model server (host:port)")
    args = parser.parse_args()
    chosen = photos()
    found, ms = detect_all(args.model, chosen)
    if args.verbose:
        for photo, faces in zip(chosen, found, strict=True):
            if not photo.name.startswith("lfw") or (faces and photo.faces == 0):
                shown = [f"{f.score:.2f}@({f.x:.2f},{f.y:.2f},{f.width:.2f}x{f.height:.2f})" for f in faces]
                print(f"{photo.name}: {photo.faces} faces; found {shown}; tags {face_tags(faces)}")
    best_false = max((f.score for p, fs in zip(chosen, found, strict=True) if not p.faces for f in fs), default=0)
    true_scores = sorted(max(f.score for f in fs) for p, fs in zip(chosen, found, strict=True) if p.faces and fs)
    print(
        f"highest score on a photo without faces: {best_false:.3f}; best face per photo with faces: "
        f"quartiles {np.percentile(true_scores, [25, 50, 75]).round(3).tolist()}"
    )
    print(f"{len(chosen)} photos, {sum(p.faces for p in chosen)} faces; detector in-process {ms:.1f} ms per image")
    if args.modelserver:
        print(f"detector through the model server at {args.modelserver}: {server_ms(args.modelserver, chosen):.1f} ms")
    print("threshold  precision  recall  false faces  tag errors (named photos)")
    for threshold in THRESHOLDS:
        row = score(chosen, found, threshold)
        print(
            f"{threshold:9.2f}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['false']:11d}  "
            f"{row['tag_errors']:10d}"
        )


if __name__ == "__main__":
    main()
