"""Search tags for predictions: each class's label, WordNet synonyms and hypernyms (services/common/vocabulary.json)."""

from collections.abc import Iterable

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
