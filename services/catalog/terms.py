"""Tags and search terms: normalisation, model-tag scores, and the rows that make prefix search fast."""

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.vocabulary import Vocabulary

MAX_TAG_CHARS = 64
MAX_MANUAL_TAGS = 50
MAX_QUERY_CHARS = 100
MANUAL_SCORE = 1.0
# Search weight of a manual tag: above any model score (at most 1), so manual matches always rank first.
MANUAL_WEIGHT = 2.0
# Model tags scoring less are not stored: at 1 % a label is noise, and hiding it keeps the tag list short.
MODEL_TAG_FLOOR = 0.01
# Default of the per-user min_score setting, measured on the search-quality photos (tests/support/search_quality.py):
# between the best-scoring wrong label there (a drilling platform in the rocket photo, 0.093) and the weakest tag
# a query must find (tabby, 0.14 for a turned view of the cat). 0.1 to 0.12 keep every right match and no wrong one.
DEFAULT_MIN_SCORE = 0.12
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    labels: Sequence[LabelScore],
    vocabulary: Vocabulary,
    *,
    face_tags: Iterable[str] = (),
    face_score: float | None = None,
) -> list[tuple[str, float]]:
    """The model tags of stored labels, best first: each label's WordNet label, synonyms and hypernyms, scored by
    the summed probability of the labels carrying it; tags under MODEL_TAG_FLOOR are not kept. The face tags among
    `face_tags` (person, people, portrait, group) score as the best face."""
    scored = dict(vocabulary.scored_tags((label.class_id, label.label, label.score) for label in labels))
    if face_score is not None:
        for tag in (normalize(raw) for raw in face_tags):
            if tag in FACE_TAGS:
                scored[tag] = max(scored.get(tag, 0.0), face_score)
    kept = [(tag, score) for tag, score in scored.items() if score >= MODEL_TAG_FLOOR and len(tag) <= MAX_TAG_CHARS]
    return sorted(kept, key=lambda item: -item[1])


def visible_tags(model_tags: Iterable[Sequence[Any]], manual: Sequence[str], hidden: Sequence[str]) -> list[TagRow]:
    """Manual tags first (in the order added), then the model tags the user has not hidden, best first."""
    rows = [TagRow(tag, MANUAL_SCORE, True) for tag in manual]
    skip = set(manual) | set(hidden)
    rows += [TagRow(tag, float(score), False) for tag, score in model_tags if tag not in skip]
    return rows


def visible_tag_names(
    model_tags: Iterable[Sequence[Any]], manual: Sequence[str], hidden: Sequence[str], min_score: float = 0.0
) -> list[str]:
    """The tags of visible_tags, names only: what every image message lists, so it builds no rows. Model tags
    scoring under `min_score` are left out: the owner's search would not find the image by them."""
    if not manual and not hidden:
        # Most images: a page builds 50 of these, and the membership test of every tag was half the cost.
        return [tag for tag, score in model_tags if score >= min_score]
    skip = set(manual) | set(hidden)
    return [*manual, *(tag for tag, score in model_tags if tag not in skip and score >= min_score)]


def search_terms(tags: Iterable[TagRow], vocabulary: Vocabulary) -> dict[str, float]:
    """The terms an image is found by, each with its best weight: every tag whole (singular), and each word of a
    manual tag too (the owner's own words). Words of a model tag are not terms: "cote" names no bell cote."""
    weights: dict[str, float] = {}
    for tag in tags:
        weight = MANUAL_WEIGHT if tag.manual else tag.score
        found = [vocabulary.term(tag.tag)]
        if tag.manual:
            found += [vocabulary.term(word) for word in tag.tag.split(" ")]
        for term in found:
            if term:
                weights[term] = max(weights.get(term, 0.0), weight)
    return weights


def query_terms(text: str, vocabulary: Vocabulary) -> list[str]:
    """The terms every result must match; raises InvalidTag for an empty or overlong query."""
    return vocabulary.query_terms(normalize_query(text))


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
