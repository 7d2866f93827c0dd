"""Search tags from the WordNet vocabulary: a class's label, synonyms and hypernyms, lower case."""

from pathlib import Path

import pytest

from services.inference.labels import read_labels
from services.inference.taxonomy import Tagger

LABELS = read_labels(Path(__file__).resolve().parents[2] / "model" / "imagenet_labels.txt")


def tags_of(label: str) -> list[str]:
    return Tagger(LABELS).tags([(LABELS.index(label), 0.9)], threshold=0.1)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("tabby", {"tabby", "cat", "kitten", "feline", "mammal", "animal"}),
        ("lion", {"lion", "big cat", "feline", "mammal"}),
        ("goldfish", {"goldfish", "fish", "animal"}),
        ("bald eagle", {"bald eagle", "eagle", "bird", "bird of prey"}),
        ("Labrador retriever", {"retriever", "dog", "puppy"}),
        ("green mamba", {"mamba", "snake", "reptile"}),
        ("monarch", {"butterfly", "insect"}),
        ("sports car", {"car", "vehicle"}),
        ("grand piano", {"piano", "musical instrument"}),
        ("rocking chair", {"chair", "furniture"}),
        ("cowboy boot", {"boot", "footwear"}),
        ("Granny Smith", {"granny smith", "apple", "fruit", "food"}),
        ("broccoli", {"vegetable", "food"}),
        ("daisy", {"flower", "plant"}),
        ("espresso", {"espresso", "coffee", "java", "beverage", "drink"}),
        ("missile", {"rocket"}),
        ("palace", {"house", "building"}),
        ("moped", {"motorbike", "motorcycle", "bike", "vehicle"}),
        ("school bus", {"bus"}),
        ("cup", {"cup", "tableware"}),
    ],
)
def test_synonyms_and_hypernyms(label, expected):
    assert expected <= set(tags_of(label))


@pytest.mark.parametrize(
    ("label", "misleading"),
    [
        ("Madagascar cat", {"cat", "madagascar"}),
        ("sea lion", {"lion", "sea"}),
        ("tiger cat", {"tiger"}),
        ("tiger shark", {"tiger"}),
        ("African hunting dog", {"dog", "hunting"}),
        ("car wheel", {"car", "machine"}),
        ("bell cote", {"cote", "bell"}),
        ("drilling platform", {"drilling", "platform"}),
        ("Egyptian cat", {"egyptian"}),
        ("hen-of-the-woods", {"hen", "woods"}),
        ("toy poodle", {"toy"}),
        ("cup", {"alcohol", "punch", "drug"}),
    ],
)
def test_no_fragment_or_rare_sense_names_something_else(label, misleading):
    assert not misleading & set(tags_of(label))


def test_the_abstract_top_is_left_out():
    every = {tag for class_id in range(len(LABELS)) for tag in Tagger(LABELS).tags([(class_id, 1.0)], 0.5)}
    for abstract in ("entity", "object", "whole", "artifact", "instrumentality", "matter", "organism", "device"):
        assert abstract not in every
    assert every == {tag.lower() for tag in every}


def test_hypernyms_score_the_sum_of_their_classes():
    predictions = [(LABELS.index("Labrador retriever"), 0.06), (LABELS.index("golden retriever"), 0.06)]
    tags = Tagger(LABELS).tags(predictions, threshold=0.1)
    assert "dog" in tags and "retriever" in tags
    assert "labrador retriever" not in tags and "golden retriever" not in tags


def test_tags_are_unique_best_first_and_above_the_threshold():
    predictions = [(LABELS.index("tabby"), 0.5), (LABELS.index("tiger cat"), 0.3), (LABELS.index("lynx"), 0.05)]
    tags = Tagger(LABELS).tags(predictions, threshold=0.1)
    assert len(tags) == len(set(tags))
    assert tags[0] == "cat" or tags.index("cat") < tags.index("tabby")
    assert "tiger cat" in tags and "lynx" not in tags
    assert tags.index("tabby") < tags.index("tiger cat")


def test_other_label_sets_get_their_labels_only():
    assert Tagger(("red panda", "blue whale")).tags([(0, 0.9)], threshold=0.1) == ["red panda"]
