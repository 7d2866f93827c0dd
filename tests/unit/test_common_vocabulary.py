"""The committed WordNet vocabulary: regenerating it gives the same file; queries map onto its words."""

import importlib.util
from pathlib import Path

import pytest

from services.common.vocabulary import VOCABULARY_FILE, load

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("build_vocabulary", ROOT / "tools" / "build_vocabulary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerating_gives_the_committed_file(tmp_path):
    output = tmp_path / "vocabulary.json"
    assert _generator().main(["--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == VOCABULARY_FILE.read_text(encoding="utf-8"), (
        "services/common/vocabulary.json is stale: run `make vocabulary` and commit it"
    )


def test_every_class_has_its_wordnet_id_and_label():
    vocabulary = load()
    labels = (ROOT / "model" / "imagenet_labels.txt").read_text(encoding="utf-8").splitlines()
    assert [words.label for words in vocabulary.classes] == [label.lower() for label in labels]
    assert len(vocabulary.version) == 12


@pytest.mark.parametrize(
    ("word", "singular"),
    [
        ("cats", "cat"),
        ("buses", "bus"),
        ("berries", "berry"),
        ("mice", "mouse"),
        ("wolves", "wolf"),
        ("glasses", "glasses"),
        ("bus", "bus"),
        ("holidays", "holiday"),
        ("octopus", "octopus"),
        ("class", "class"),
    ],
)
def test_plurals_meet_their_singular(word, singular):
    assert load().singular(word) == singular


def test_queries_split_into_known_phrases_and_words():
    vocabulary = load()
    assert vocabulary.query_terms("Coffee  Cup") == ["coffee", "cup"]
    assert vocabulary.query_terms("golden RETRIEVERS") == ["golden retriever"]
    assert vocabulary.query_terms("German shepherd dog") == ["german shepherd dog"]
    assert vocabulary.query_terms("sports cars") == ["sports car"]
    assert vocabulary.query_terms("cat cats") == ["cat"]


def test_unknown_labels_are_their_own_tag():
    assert load().tags(0, "Red Panda") == ("red panda",)
    assert load().tags(0, "tabby") == load().tags(281, "tabby")
    assert load().tags(281, "Tabby")[:2] == ("tabby", "tabby cat")
