"""Tag normalisation, model-tag scores, manual/hidden tag edits and the search-term rows."""

import pytest

from services.catalog import terms
from services.catalog.terms import LabelScore, TagRow


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


def test_word_suffixes_split_on_spaces_and_hyphens():
    assert terms.word_suffixes("german short-haired pointer") == [
        "german short-haired pointer",
        "short-haired pointer",
        "haired pointer",
        "pointer",
    ]
    assert terms.word_suffixes("cat") == ["cat"]


def test_prefix_range_covers_exactly_the_prefix():
    low, high = terms.prefix_range("retr")
    assert (low, high) == ("retr", "rets")
    for inside in ("retr", "retriever", "retr\U0010ffff"):
        assert low <= inside < high
    for outside in ("ret", "rets", "retq"):
        assert not (low <= outside < high)
    assert terms.prefix_range("a\U0010ffff") == ("a\U0010ffff", "b")
    assert terms.prefix_range("\U0010ffff") == ("\U0010ffff", "\U0010ffff\U0010ffff")


def test_model_tag_scores_come_from_matching_labels():
    labels = [LabelScore("golden retriever", 207, 0.8), LabelScore("Labrador retriever", 208, 0.1)]
    scored = dict(terms.score_model_tags(labels, ["Golden Retriever", "retriever", "dog"]))
    assert scored["golden retriever"] == pytest.approx(0.8)
    assert scored["retriever"] == pytest.approx(0.8)
    # A group tag no label names gets the top label's score.
    assert scored["dog"] == pytest.approx(0.8)


def test_visible_tags_put_manual_first_and_drop_hidden():
    rows = terms.visible_tags([["dog", 0.9], ["cat", 0.4], ["pet", 0.3]], ["mine", "cat"], ["pet"])
    assert rows == [TagRow("mine", 1.0, True), TagRow("cat", 1.0, True), TagRow("dog", 0.9, False)]


def test_search_terms_keep_the_best_weight_and_manual_tags_weigh_most():
    labels = [LabelScore("golden retriever", 207, 0.8), LabelScore("flat-coated retriever", 205, 0.1)]
    found = terms.search_terms(labels, [TagRow("dog", 0.8, False), TagRow("retriever", 1.0, True)])
    assert found["retriever"] == terms.MANUAL_WEIGHT > 1
    assert found["golden retriever"] == pytest.approx(0.8)
    assert found["coated retriever"] == pytest.approx(0.1)
    assert found["dog"] == pytest.approx(0.8)


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
