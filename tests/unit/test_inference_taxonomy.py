"""Search tags: label words and coarse groups, so "dog" finds every breed."""

from pathlib import Path

import pytest

from services.inference.labels import read_labels
from services.inference.taxonomy import Tagger, groups_by_class, label_words

LABELS = read_labels(Path(__file__).resolve().parents[2] / "model" / "imagenet_labels.txt")


def tags_of(class_id: int) -> list[str]:
    return Tagger(LABELS).tags([(class_id, 0.9)], threshold=0.1)


def test_every_dog_breed_is_a_dog_and_nothing_else_is():
    dogs = {class_id for class_id, groups in groups_by_class().items() if "dog" in groups}
    assert dogs == set(range(151, 269))
    assert "dog" in tags_of(LABELS.index("Labrador retriever"))


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("tabby", {"tabby", "cat", "feline", "mammal", "animal"}),
        ("lion", {"lion", "big cat", "feline", "mammal"}),
        ("goldfish", {"goldfish", "fish", "animal"}),
        ("bald eagle", {"bald eagle", "eagle", "bird", "bird of prey"}),
        ("tree frog", {"frog", "amphibian"}),
        ("green mamba", {"mamba", "snake", "reptile"}),
        ("monarch", {"butterfly", "insect"}),
        ("sports car", {"car", "vehicle"}),
        ("grand piano", {"piano", "instrument"}),
        ("rocking chair", {"chair", "furniture"}),
        ("cowboy boot", {"boot", "footwear", "clothing"}),
        ("suspension bridge", {"bridge", "structure"}),
        ("Granny Smith", {"granny smith", "fruit", "food"}),
        ("broccoli", {"vegetable", "food"}),
        ("daisy", {"flower", "plant"}),
        ("espresso", {"espresso", "drink", "food"}),
    ],
)
def test_groups_and_words(label, expected):
    assert expected <= set(tags_of(LABELS.index(label)))


def test_misleading_words_are_dropped():
    assert "cat" not in tags_of(LABELS.index("Madagascar cat"))
    assert "lion" not in tags_of(LABELS.index("sea lion"))
    assert "lemur" in tags_of(LABELS.index("Madagascar cat"))


@pytest.mark.parametrize(
    ("label", "dropped", "kept"),
    [
        ("tiger cat", "tiger", "cat"),  # another class, another family
        ("tiger shark", "tiger", "shark"),
        ("African hunting dog", "dog", "hunting"),  # a group it is not in
        ("car wheel", "car", "wheel"),
        ("snow leopard", None, "leopard"),  # a close relative: same groups
        ("Egyptian cat", None, "cat"),
    ],
)
def test_words_naming_something_else_are_not_tags(label, dropped, kept):
    tags = tags_of(LABELS.index(label))
    assert label.lower() in tags and kept in tags
    if dropped is not None:
        assert dropped not in tags


def test_label_words():
    assert label_words("black-and-tan coonhound") == ["black", "tan", "coonhound"]
    assert label_words("carpenter's kit") == ["carpenter", "kit"]
    assert label_words("yellow lady's slipper") == ["yellow", "lady", "slipper"]


def test_tags_are_lower_case_unique_and_above_the_threshold():
    predictions = [(LABELS.index("tabby"), 0.5), (LABELS.index("tiger cat"), 0.3), (LABELS.index("lynx"), 0.05)]
    tags = Tagger(LABELS).tags(predictions, threshold=0.1)
    assert tags == [t.lower() for t in tags] and len(tags) == len(set(tags))
    assert "tiger cat" in tags and "cat" in tags and "lynx" not in tags
    assert tags.index("tabby") < tags.index("tiger cat")


def test_every_group_names_real_classes():
    assert set(groups_by_class()) <= set(range(1000))
    ungrouped = set(range(1000)) - set(groups_by_class())
    assert len(ungrouped) < 30, sorted(ungrouped)


def test_other_label_sets_get_words_only():
    assert Tagger(("red panda", "blue whale")).tags([(0, 0.9)], threshold=0.1) == ["red panda", "red", "panda"]
