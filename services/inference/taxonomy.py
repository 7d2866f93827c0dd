"""Search tags for predictions: each class's label, WordNet synonyms and hypernyms (services/common/vocabulary.json)."""

from collections.abc import Iterable, Sequence
from typing import Protocol

from services.common.vocabulary import Vocabulary, load


class Tagger:
    """Turns ranked predictions into search tags scoring at least a threshold, best first.

    A hypernym scores the summed probability of the predicted classes under it, so "dog" can be confident when
    no single breed is. Labels the vocabulary does not know (another model's) are their own only tag.
    """

    def __init__(self, labels: tuple[str, ...], vocabulary: Vocabulary | None = None) -> None:
        self._labels = labels
        self._vocabulary = vocabulary or load()

    def tags(self, predictions: Iterable[tuple[int, float]], threshold: float) -> list[str]:
        named = [(class_id, self._labels[class_id], score) for class_id, score in predictions]
        scored = self._vocabulary.scored_tags(named)
        return [tag for tag, score in scored.items() if score >= threshold]


# Face tags (docs/images-and-search.md, "People in photos"): measured with `python -m bench.faces`.
# A face is dominant when its area is at least this many times any other face's (twice the width): a portrait
# with people far behind its subject stays a portrait; two faces closer in size make a group.
DOMINANT_FACE_RATIO = 4.0


class _Sized(Protocol):
    @property
    def area(self) -> float: ...


def face_tags(faces: Sequence[_Sized]) -> list[str]:
    """person and people for any face; portrait for one dominant face, group for several faces without one."""
    if not faces:
        return []
    areas = sorted((face.area for face in faces), reverse=True)
    dominant = len(areas) == 1 or areas[0] >= DOMINANT_FACE_RATIO * areas[1]
    return ["person", "people", "portrait" if dominant else "group"]
