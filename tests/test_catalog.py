import re

import pytest

from nnunet_breast.structures import catalog


def test_twenty_breast_structures_and_the_clip_marker():
    assert len(catalog.BREAST_STRUCTURES) == 20
    assert catalog.CLIP_STRUCTURES == ("Clips",)
    expected_oars = {"Heart", "Lung_L", "Lung_R", "Esophagus", "SpinalCord", "Glnd_Thyroid"}
    assert expected_oars <= set(catalog.BREAST_STRUCTURES)
    for stem in ("CTVp_breast", "CTVn_L1", "CTVn_L2", "CTVn_L3", "CTVn_L4", "CTVn_IMN", "CTVn_SCL"):
        for side in "LR":
            s = catalog.BY_NAME[f"{stem}_{side}"]
            assert s.kind == "CTV" and s.side == side
    assert catalog.BY_NAME["Clips"].kind == "MARKER"
    assert {catalog.BY_NAME[n].kind for n in expected_oars} == {"ORGAN"}
    for s in catalog.STRUCTURES:
        assert len(s.color) == 3 and all(0 <= c <= 255 for c in s.color)


@pytest.mark.parametrize("written, canonical", [
    ("Lt Lung", "Lung_L"), ("LUNG_L", "Lung_L"), ("Left Lung", "Lung_L"), ("lung-left", "Lung_L"),
    ("Rt Lung", "Lung_R"), ("Spinal Cord", "SpinalCord"), ("SPINAL_CORD", "SpinalCord"),
    ("CTV_L1_Lt", "CTVn_L1_L"), ("ctv l1 rt", "CTVn_L1_R"), ("Thyroid", "Glnd_Thyroid"),
    ("CTV_SCL_RTOG_L", "CTVn_SCL_L"), ("IMN Right", "CTVn_IMN_R"), ("CTV Breast Left", "CTVp_breast_L"),
    ("Oesophagus", "Esophagus"), ("Surgical Clips", "Clips"), ("heart", "Heart"),
])
def test_synonyms_match_case_space_and_separator_insensitively(written, canonical):
    assert catalog.match_name(written) == canonical


SIDE_WORDS = {"l": "L", "lt": "L", "left": "L", "lft": "L", "r": "R", "rt": "R", "right": "R", "rgt": "R"}


def side_words(spelling: str) -> set[str]:
    """Sides a spelling names: side words as separate tokens in any position and case ("Lung (Left)", "lt lung",
    "CTV_L1_RT"; "L1" is a nodal level, not a side), or glued in front of a capitalised word ("LLung")."""
    sides = set()
    for token in re.split(r"[\s_\-.()+/]+", spelling):
        glued = re.match(r"(Left|Right|Lft|Rgt|Lt|Rt|L|R)(?=[A-Z][a-z])", token)
        word = token.lower() if token.lower() in SIDE_WORDS else glued and glued.group(1).lower()
        if word:
            sides.add(SIDE_WORDS[word])
    return sides


def side_mismatches(structures) -> list[str]:
    """Spellings whose side words disagree with their structure's side (a midline structure names none)."""
    return [f"{spelling!r} filed under {s.name}" for s in structures for spelling in (s.name,) + s.synonyms
            if side_words(spelling) != ({s.side} if s.side else set())]


@pytest.mark.parametrize("spelling, sides", [
    ("Lung (Left)", {"L"}), ("lung-left", {"L"}), ("LT LUNG", {"L"}), ("LLung", {"L"}), ("Lung_Lft", {"L"}),
    ("RIGHT LUNG", {"R"}), ("RLung", {"R"}), ("CTV_L1_Rt", {"R"}), ("rgt_IMN", {"R"}), ("CTVn_L4", set()),
    ("LUNG", set()), ("Left/Right", {"L", "R"}), ("Heart", set()),
])
def test_side_words_are_found_in_any_position_and_case(spelling, sides):
    assert side_words(spelling) == sides


def test_sides_are_never_confused():
    """Every spelling's side words name its structure's side, and it matches that structure."""
    assert side_mismatches(catalog.STRUCTURES) == []
    for s in catalog.STRUCTURES:
        for spelling in s.synonyms:
            assert catalog.match_name(spelling) == s.name
    lung_r = catalog.BY_NAME["Lung_R"]     # the check itself catches a left spelling filed under the right lung
    misfiled = catalog.Structure(lung_r.name, lung_r.kind, lung_r.color, lung_r.synonyms + ("Lung Left",), "R")
    assert side_mismatches([misfiled]) == ["'Lung Left' filed under Lung_R"]


def test_unknown_names_are_reported_not_dropped():
    result = catalog.match_names(["Lt Lung", "PTV_50", "Heart", "Couch", "HEART "])
    assert result.unknown == ["PTV_50", "Couch"]
    assert result.mapped == {"Lt Lung": "Lung_L", "Heart": "Heart", "HEART ": "Heart"}
    assert result.duplicates == {"Heart": ["Heart", "HEART "]}
    assert catalog.match_name("Lung") is None          # no side: no guess


def test_user_mapping_wins_and_is_validated():
    assert catalog.match_name("Coeur", {"coeur": "Heart"}) == "Heart"
    assert catalog.match_name("Lt Lung", {"Lt Lung": "Lung_R"}) == "Lung_R"
    with pytest.raises(ValueError, match="not a catalog structure"):
        catalog.match_name("Coeur", {"Coeur": "Herz"})


def test_ambiguous_synonyms_are_refused_at_import(monkeypatch):
    dup = catalog.Structure("Fake", "ORGAN", (1, 2, 3), ("Lt Lung",))
    monkeypatch.setattr(catalog, "STRUCTURES", catalog.STRUCTURES + (dup,))
    with pytest.raises(ValueError, match="ambiguous"):
        catalog._build_index()
