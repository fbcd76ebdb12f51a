"""The structures this package speaks about, as data.

Canonical names follow AAPM TG-263 (OARs as TG-263 lists them; nodal targets as ``CTVn_L1_L``). Each
entry carries the synonyms seen in treatment-planning-system exports, the DICOM RTROIInterpretedType
and a display colour. :func:`match_name` maps a free-text ROI name to a canonical name; it is
case-, space- and separator-insensitive and never guesses: a name that is not listed returns ``None``
and the caller must report it (see :func:`match_names`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from nnunet_breast.errors import UserError


@dataclass(frozen=True)
class Structure:
    name: str                      # TG-263 canonical name, written to RTSTRUCT and dataset.json
    kind: str                      # RTROIInterpretedType: ORGAN, CTV or MARKER
    color: tuple[int, int, int]    # display colour (ROIDisplayColor)
    synonyms: tuple[str, ...] = field(default=())
    side: str | None = None        # "L", "R" or None for midline structures
    cohort: str = "breast"         # "breast" (20 contours) or "clips"


def _targets() -> list[Structure]:
    # (TG-263 stem, display colour, synonym stems). A synonym stem X expands to the spellings TPS users
    # type for each side: X_L, X_Lt, X_Left, Left X, Lt X, L X ...
    table = [
        ("CTVp_breast", (255, 105, 180), ["CTV_Breast", "CTVp_Breast", "Breast_CTV", "CTV Breast", "CTVbreast", "Breast"]),
        ("CTVn_L1", (0, 191, 255), ["CTV_L1", "CTVn_L1", "L1", "CTV_Ax1", "Axilla_L1", "CTV_Axilla_L1"]),
        ("CTVn_L2", (30, 144, 255), ["CTV_L2", "CTVn_L2", "L2", "CTV_Ax2", "Axilla_L2", "CTV_Axilla_L2"]),
        ("CTVn_L3", (65, 105, 225), ["CTV_L3", "CTVn_L3", "L3", "CTV_Ax3", "Axilla_L3", "CTV_Axilla_L3"]),
        ("CTVn_L4", (138, 43, 226), ["CTV_L4", "CTVn_L4", "L4", "CTV_SCV_ESTRO", "CTVn_L4_ESTRO"]),
        ("CTVn_IMN", (255, 215, 0), ["CTV_IMN", "CTVn_IMN", "IMN", "CTV_IMC", "IMC", "CTV_IM"]),
        ("CTVn_SCL", (186, 85, 211), ["CTV_SCL", "CTVn_SCL", "SCL", "CTV_SCV", "SCV", "CTV_SCL_RTOG", "SCL_RTOG", "CTVn_SCL_RTOG"]),
    ]
    out = []
    for stem, color, syn in table:
        for side, words in (("L", ("L", "Lt", "Left", "Lft")), ("R", ("R", "Rt", "Right", "Rgt"))):
            spellings = []
            for s in syn:
                for w in words:
                    spellings += [f"{s}_{w}", f"{w}_{s}", f"{w} {s}", f"{s} {w}"]
            out.append(Structure(f"{stem}_{side}", "CTV", color, tuple(spellings), side))
    return out


STRUCTURES: tuple[Structure, ...] = tuple(_targets()) + (
    Structure("Heart", "ORGAN", (255, 0, 0),
              ("Heart", "HEART", "Cor", "Whole Heart", "Heart_Whole", "Heart+Pericardium")),
    Structure("Lung_L", "ORGAN", (0, 200, 100),
              ("Lung_L", "LUNG_L", "Lt Lung", "Left Lung", "Lung Left", "Lung_Lt", "L Lung", "Lung (Left)", "LLung"), "L"),
    Structure("Lung_R", "ORGAN", (0, 140, 70),
              ("Lung_R", "LUNG_R", "Rt Lung", "Right Lung", "Lung Right", "Lung_Rt", "R Lung", "Lung (Right)", "RLung"), "R"),
    Structure("Esophagus", "ORGAN", (210, 180, 140),
              ("Esophagus", "Oesophagus", "Esoph", "ESOPHAGUS")),
    Structure("SpinalCord", "ORGAN", (255, 255, 0),
              ("SpinalCord", "Spinal Cord", "Spinal_Cord", "Cord", "SPINAL CORD", "Spinal Canal")),
    Structure("Glnd_Thyroid", "ORGAN", (0, 255, 255),
              ("Glnd_Thyroid", "Thyroid", "Thyroid Gland", "Thyroid_Gland", "THYROID")),
    Structure("Clips", "MARKER", (192, 192, 192),
              ("Clips", "Clip", "Surgical Clips", "Surgical_Clips", "Titanium Clips", "Marker_Clips", "Clips_TB",
               "Tumor Bed Clips", "Fiducials_Clips"), None, "clips"),
)

BY_NAME: dict[str, Structure] = {s.name: s for s in STRUCTURES}
BREAST_STRUCTURES: tuple[str, ...] = tuple(s.name for s in STRUCTURES if s.cohort == "breast")
CLIP_STRUCTURES: tuple[str, ...] = tuple(s.name for s in STRUCTURES if s.cohort == "clips")


def normalize(name: str) -> str:
    """Case-, space- and separator-insensitive key: 'Lt. Lung' and 'LT_LUNG' give the same key."""
    return re.sub(r"[\s_\-\.\(\)\+/]+", "", name).lower()


def _build_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for s in STRUCTURES:
        for spelling in (s.name,) + s.synonyms:
            key = normalize(spelling)
            previous = index.setdefault(key, s.name)
            if previous != s.name:  # a synonym that could mean two structures would be a silent guess
                raise ValueError(f"ambiguous synonym {spelling!r}: {previous} and {s.name}")
    return index


_INDEX = _build_index()


def match_name(roi_name: str, mapping: dict[str, str] | None = None) -> str | None:
    """Canonical name for ``roi_name`` or ``None`` if it is unknown.

    ``mapping`` (user ROI name -> canonical name, from a mapping file) wins over the catalog; its
    targets must be catalog names.
    """
    if mapping:
        user = {normalize(k): v for k, v in mapping.items()}
        hit = user.get(normalize(roi_name))
        if hit is not None:
            if hit not in BY_NAME:
                raise UserError(f"mapping sends {roi_name!r} to {hit!r}, which is not a catalog structure")
            return hit
    return _INDEX.get(normalize(roi_name))


@dataclass
class NameMatch:
    mapped: dict[str, str]          # ROI name as written -> canonical name
    unknown: list[str]              # ROI names nothing matched (reported, never dropped silently)
    duplicates: dict[str, list[str]]  # canonical name -> several ROI names that all map to it


def match_names(roi_names: list[str], mapping: dict[str, str] | None = None) -> NameMatch:
    mapped, unknown, seen = {}, [], {}
    for roi in roi_names:
        canon = match_name(roi, mapping)
        if canon is None:
            unknown.append(roi)
        else:
            mapped[roi] = canon
            seen.setdefault(canon, []).append(roi)
    return NameMatch(mapped, unknown, {k: v for k, v in seen.items() if len(v) > 1})


def spellings(name: str) -> tuple[str, ...]:
    """All accepted spellings of a canonical name (canonical first); used by the synthetic TPS export."""
    s = BY_NAME[name]
    return (s.name,) + s.synonyms
