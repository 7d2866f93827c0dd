"""Search words of the ImageNet-1k classes (vocabulary.json, from WordNet 3.0), and how queries map onto them."""

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

VOCABULARY_FILE = Path(__file__).with_name("vocabulary.json")
# Irregular plurals among the vocabulary's words; regular ones follow WordNet's suffix rules below.
_IRREGULAR = {"mice": "mouse", "geese": "goose", "teeth": "tooth", "feet": "foot", "people": "person"}
# WordNet's noun detachment rules (morphy): plural ending -> singular ending, tried in order.
_SUFFIXES = (
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("ves", "f"),
    ("ves", "fe"),
)
# Words of one's own tags that WordNet does not know lose a plural "s" too ("holidays"), but not "ss", "us", "is".
_PLAIN_PLURAL = re.compile(r"^(.{2,}?[^sui])s$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class ClassWords:
    label: str
    synonyms: tuple[str, ...]
    hypernyms: tuple[str, ...]

    @property
    def tags(self) -> tuple[str, ...]:
        """The label, then its synonyms, then its hypernyms nearest first."""
        return tuple(dict.fromkeys((self.label, *self.synonyms, *self.hypernyms)))


class Vocabulary:
    """Tags per class id, and the words and phrases that queries are matched against."""

    def __init__(self, version: str, classes: tuple[ClassWords, ...]) -> None:
        self.version = version
        self.classes = classes
        self.phrases = frozenset(tag for words in classes for tag in words.tags)
        self.words = frozenset(word for phrase in self.phrases for word in phrase.split(" "))
        self._longest = max(len(phrase.split(" ")) for phrase in self.phrases)
        self._by_label = {words.label: words for words in classes}

    def tags(self, class_id: int, label: str) -> tuple[str, ...]:
        """The class's tags, found by id (or by label, for a model numbering the same classes otherwise); a label
        this vocabulary does not know is its only tag."""
        label = normalize(label)
        if 0 <= class_id < len(self.classes) and self.classes[class_id].label == label:
            return self.classes[class_id].tags
        known = self._by_label.get(label)
        return known.tags if known else (label,)

    def scored_tags(self, labels: Iterable[tuple[int, str, float]]) -> dict[str, float]:
        """Each tag of the (class id, label, score) predictions, scored by the summed probability of the classes
        carrying it: an image 40 % Labrador and 30 % golden retriever is 70 % "dog". Best first."""
        scores: dict[str, float] = {}
        for class_id, label, score in labels:
            for tag in self.tags(class_id, label):
                scores[tag] = scores.get(tag, 0.0) + score
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        return {tag: min(1.0, round(score, 6)) for tag, score in ranked}

    def singular(self, word: str) -> str:
        """A word's singular: "buses" -> "bus", "berries" -> "berry", "cats" -> "cat", "holidays" -> "holiday".

        Queries and tags both pass through here, so a word and its plural always meet on the same term."""
        if word in self.words:
            return word
        if word in _IRREGULAR:
            return _IRREGULAR[word]
        candidates = [word[: -len(plural)] + single for plural, single in _SUFFIXES if word.endswith(plural)]
        candidates.append(word[:-1])
        for candidate in candidates:
            if candidate in self.words:
                return candidate
        if len(word) > 4 and word.endswith("ies"):
            return word[:-3] + "y"
        plain = _PLAIN_PLURAL.match(word)
        return plain.group(1) if plain else word

    def term(self, text: str) -> str:
        """The search term of a tag or phrase: lower case, single spaces, every word singular."""
        return " ".join(self.singular(word) for word in normalize(text).split(" ") if word)

    def query_terms(self, query: str) -> list[str]:
        """A query as the terms an image must all match: known phrases whole ("golden retriever"), other words
        one by one ("coffee cup" -> coffee, cup)."""
        words = self.term(query).split(" ")
        found, start = [], 0
        while start < len(words):
            for end in range(min(len(words), start + self._longest), start, -1):
                phrase = " ".join(words[start:end])
                if end == start + 1 or phrase in self.phrases:
                    found.append(phrase)
                    start = end
                    break
        return list(dict.fromkeys(found))


def normalize(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


@functools.cache
def load(path: Path = VOCABULARY_FILE) -> Vocabulary:
    """The vocabulary file, read once per process."""
    data = json.loads(path.read_text(encoding="utf-8"))
    classes = tuple(
        ClassWords(item["label"], tuple(item["synonyms"]), tuple(item["hypernyms"])) for item in data["classes"]
    )
    return Vocabulary(data["version"], classes)
