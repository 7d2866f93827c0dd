"""Tags and search terms: normalisation, model-tag scores, and the rows that make prefix search fast."""

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_TAG_CHARS = 64
MAX_MANUAL_TAGS = 50
MAX_QUERY_CHARS = 100
MANUAL_SCORE = 1.0
# Search weight of a manual tag: above any model score (at most 1), so manual matches always rank first.
MANUAL_WEIGHT = 2.0
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Words of a label or tag start after a space, hyphen, slash, comma or apostrophe: "short-haired pointer"
# is found by "short", "haired" and "pointer".
_WORD_START = re.compile(r"(?<=[\s\-/,'])(?=\w)")


class InvalidTag(ValueError):
    """A tag or query the client must fix."""


@dataclass(frozen=True)
class LabelScore:
    label: str
    class_id: int
    score: float


@dataclass(frozen=True)
class TagRow:
    tag: str
    score: float
    manual: bool


# Model labels come from a fixed vocabulary and are normalised dozens of times per upload.
@functools.lru_cache(maxsize=8192)
def normalize(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def normalize_tag(text: str) -> str:
    tag = normalize(text)
    if not tag or len(tag) > MAX_TAG_CHARS or _CONTROL.search(tag):
        raise InvalidTag(f"tags must be 1 to {MAX_TAG_CHARS} printable characters, got {text[:80]!r}")
    return tag


def normalize_query(text: str) -> str:
    query = normalize(text)
    if not query:
        raise InvalidTag("query must not be empty")
    if len(query) > MAX_QUERY_CHARS or _CONTROL.search(query):
        raise InvalidTag(f"query must be at most {MAX_QUERY_CHARS} printable characters")
    return query


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) bounds of every string starting with `prefix`, in code-point ("C" collation) order."""
    stem = prefix
    while stem and ord(stem[-1]) == 0x10FFFF:
        stem = stem[:-1]
    if not stem:
        return prefix, prefix + chr(0x10FFFF)
    return prefix, stem[:-1] + chr(ord(stem[-1]) + 1)


# Tags inference gives for faces (services/inference/taxonomy.py, face_tags).
FACE_TAGS = frozenset({"person", "people", "portrait", "group"})


def score_model_tags(
    labels: Sequence[LabelScore], tags: Iterable[str], *, face_score: float | None = None
) -> list[tuple[str, float]]:
    """A score for each model tag: the label it names, else the best label containing it, else the top label;
    the face tags (person, people, portrait, group) score as the best face."""
    top = max((label.score for label in labels), default=0.0)
    scored: dict[str, float] = {}
    for raw in tags:
        tag = normalize(raw)
        if not tag or len(tag) > MAX_TAG_CHARS:
            continue
        if tag in FACE_TAGS and face_score is not None:
            scored[tag] = face_score
            continue
        exact = [label.score for label in labels if normalize(label.label) == tag]
        partial = [label.score for label in labels if tag in normalize(label.label).split(" ")]
        scored[tag] = max(exact or partial or [top])
    return sorted(scored.items(), key=lambda item: -item[1])


def visible_tags(model_tags: Iterable[Sequence], manual: Sequence[str], hidden: Sequence[str]) -> list[TagRow]:
    """Manual tags first (in the order added), then the model tags the user has not hidden, best first."""
    rows = [TagRow(tag, MANUAL_SCORE, True) for tag in manual]
    skip = set(manual) | set(hidden)
    rows += [TagRow(tag, float(score), False) for tag, score in model_tags if tag not in skip]
    return rows


def search_terms(labels: Iterable[LabelScore], tags: Iterable[TagRow]) -> dict[str, float]:
    """Every word-suffix of every label and tag, weighted by its best score; manual tags weigh MANUAL_WEIGHT."""
    weights: dict[str, float] = {}
    sources = [(normalize(label.label), label.score) for label in labels]
    sources += [(tag.tag, MANUAL_WEIGHT if tag.manual else tag.score) for tag in tags]
    for text, weight in sources:
        for suffix in word_suffixes(text):
            weights[suffix] = max(weights.get(suffix, 0.0), weight)
    return weights


def word_suffixes(text: str) -> list[str]:
    starts = [0, *(m.start() for m in _WORD_START.finditer(text))]
    return list(dict.fromkeys(text[i:] for i in starts if text[i:]))


def apply_tag_changes(
    *,
    manual: Sequence[str],
    hidden: Sequence[str],
    model: Iterable[str],
    add: Sequence[str],
    remove: Sequence[str],
    replace: bool,
) -> tuple[list[str], list[str]]:
    """New (manual, hidden) tag lists: additions first (or instead, with `replace`), then removals.

    Removing a model tag hides it, so reclassification does not bring it back; adding a tag unhides it.
    """
    added = [normalize_tag(tag) for tag in add]
    removed = {normalize_tag(tag) for tag in remove}
    new_manual = list(dict.fromkeys(added if replace else [*manual, *added]))
    new_manual = [tag for tag in new_manual if tag not in removed]
    if len(new_manual) > MAX_MANUAL_TAGS:
        raise InvalidTag(f"an image can have at most {MAX_MANUAL_TAGS} manual tags")
    model_set = set(model)
    new_hidden = [tag for tag in hidden if tag not in added]
    new_hidden += [tag for tag in sorted(removed) if tag in model_set and tag not in new_hidden]
    return new_manual, new_hidden
