"""Tag normalisation, model-tag scores, manual/hidden tag edits and the search-term rows."""

import pytest

from services.catalog import terms
from services.catalog.terms import LabelScore, TagRow
from services.common.vocabulary import load

VOCABULARY = load()


def test_normalize_tag_lowercases_and_collapses_spaces():
    assert terms.normalize_tag("  Golden   Retriever ") == "golden retriever"


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, "bad\x00tag", "tab\x07"])
def test_normalize_tag_rejects(bad):
    with pytest.raises(terms.InvalidTag):
        terms.normalize_tag(bad)


def test_normalize_query_rejects_empty_and_long():
    with pytest.raises(terms.InvalidTag, match="empty"):
        terms.normalize_query("  ")
    with pytest.raises(terms.InvalidTag):
        terms.normalize_query("q" * 101)
    assert terms.normalize_query("RETR") == "retr"


def test_prefix_range_covers_exactly_the_prefix():
    low, high = terms.prefix_range("retr")
    assert (low, high) == ("retr", "rets")
    for inside in ("retr", "retriever", "retr\U0010ffff"):
        assert low <= inside < high
    for outside in ("ret", "rets", "retq"):
        assert not (low <= outside < high)
    assert terms.prefix_range("a\U0010ffff") == ("a\U0010ffff", "b")
    assert terms.prefix_range("\U0010ffff") == ("\U0010ffff", "\U0010ffff\U0010ffff")


def test_model_tags_come_from_the_stored_labels_through_the_vocabulary():
    labels = [LabelScore("golden retriever", 207, 0.5), LabelScore("Labrador retriever", 208, 0.3)]
    scored = dict(terms.score_model_tags(labels, VOCABULARY))
    assert scored["golden retriever"] == pytest.approx(0.5)
    # A hypernym scores the summed probability of the labels under it.
    assert scored["retriever"] == pytest.approx(0.8)
    assert scored["dog"] == pytest.approx(0.8)
    assert "golden" not in scored and "labrador" not in scored


def test_model_tags_below_the_floor_are_not_kept():
    labels = [LabelScore("moped", 665, 0.9), LabelScore("mountain bike", 671, 0.004)]
    scored = dict(terms.score_model_tags(labels, VOCABULARY))
    assert "motorcycle" in scored and "mountain bike" not in scored
    assert scored["bike"] == pytest.approx(0.904)


def test_visible_tags_put_manual_first_and_drop_hidden():
    rows = terms.visible_tags([["dog", 0.9], ["cat", 0.4], ["pet", 0.3]], ["mine", "cat"], ["pet"])
    assert rows == [TagRow("mine", 1.0, True), TagRow("cat", 1.0, True), TagRow("dog", 0.9, False)]


def test_search_terms_are_whole_singular_tags_and_manual_words():
    tags = [TagRow("bell cote", 0.8, False), TagRow("dog", 0.6, False), TagRow("Summer Holidays", 1.0, True)]
    found = terms.search_terms(tags, VOCABULARY)
    assert found == {
        "bell cote": pytest.approx(0.8),
        "dog": pytest.approx(0.6),
        "summer holiday": terms.MANUAL_WEIGHT,
        "summer": terms.MANUAL_WEIGHT,
        "holiday": terms.MANUAL_WEIGHT,
    }


def test_query_terms_understand_case_plurals_and_phrases():
    assert terms.query_terms("Cats", VOCABULARY) == ["cat"]
    assert terms.query_terms("coffee  cups", VOCABULARY) == ["coffee", "cup"]
    assert terms.query_terms("Golden Retrievers", VOCABULARY) == ["golden retriever"]
    with pytest.raises(terms.InvalidTag):
        terms.query_terms("   ", VOCABULARY)


def test_tag_changes_add_remove_hide_and_replace():
    manual, hidden = terms.apply_tag_changes(
        manual=["holiday"], hidden=[], model=["dog", "pet"], add=["Beach", "holiday"], remove=["dog"], replace=False
    )
    assert manual == ["holiday", "beach"]
    assert hidden == ["dog"]
    manual, hidden = terms.apply_tag_changes(
        manual=manual, hidden=hidden, model=["dog", "pet"], add=["dog"], remove=[], replace=True
    )
    assert manual == ["dog"]
    assert hidden == []


def test_too_many_manual_tags():
    with pytest.raises(terms.InvalidTag, match="at most 50"):
        terms.apply_tag_changes(
            manual=[], hidden=[], model=[], add=[f"t{i}" for i in range(51)], remove=[], replace=False
        )
