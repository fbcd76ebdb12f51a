"""Predicted masks -> one DICOM Segmentation (SEG) of the source CT, written with highdicom.

RTSTRUCT is what a TPS imports; SEG is what PACS viewers, research archives and AI pipelines exchange
(TotalSegmentator and MONAI Deploy write it with highdicom too). Each structure is its own BINARY segment,
so overlapping structures (SCL RTOG contains L4) survive voxel for voxel. A segment carries the catalog name
as its label, the catalog colour (as CIELab), SNOMED CT codes for what it is, and the algorithm that made it
(name, version, model parameters). A structure predicted empty is left out: a SEG segment without a frame
says nothing a reader can use (the RTSTRUCT keeps such ROIs, empty, for the planner).

Codes (all from the DICOM content mapping resource, as pydicom's ``codes`` dictionary has them):

* organs: category *Anatomical Structure* (SCT 91723000), type Heart 80891009, Lung 39607008 (with modifier
  Left 7771000 / Right 24028007), Esophagus 32849002, Spinal cord 2748008, Thyroid 69748006;
* CTVs: category *RT Target* (DCM 130041, CID 9580 "RT Segmentation Property Category"), type *Clinical
  target volume* (SCT 228792002, CID 9534 "Radiotherapy Target"), with the anatomic region it covers: Breast
  76752008, Axilla 91470000 (levels 1-3), Supraclavicular region of neck 77621008 (L4, SCL), Parasternal
  91691001 (internal mammary nodes), and the side as the region's modifier;
* clips: category *Physical object* (SCT 260787004), type Clip (SCT 77720000);
* a proposal (tumour-bed draft): an RT Target CTV like the others, labelled as such and described
  ``PROPOSAL``.

Frames follow the CT's slices (highdicom sorts and references them: Referenced Series Sequence, per frame
its source slice); the SEG shares the CT's study, patient and frame of reference.
"""
from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np
from pydicom.sr.codedict import codes

from nnunet_breast import __version__
from nnunet_breast.dicom.ct_reader import CTVolume
from nnunet_breast.structures import catalog

ALGORITHM_NAME = "nnunet_breast"
PROPOSAL_COLOR = (255, 140, 0)
SEG_DESCRIPTION = "nnunet_breast automatic segmentation"

_ORGANS = {"Heart": codes.SCT.Heart, "Lung": codes.SCT.Lung, "Esophagus": codes.SCT.Esophagus,
           "SpinalCord": codes.SCT.SpinalCord, "Glnd_Thyroid": codes.SCT.Thyroid}
_CTV_REGIONS = {"CTVp_breast": codes.SCT.Breast, "CTVn_L1": codes.SCT.Axilla, "CTVn_L2": codes.SCT.Axilla,
                "CTVn_L3": codes.SCT.Axilla, "CTVn_L4": codes.SCT.SupraclavicularRegionOfNeck,
                "CTVn_SCL": codes.SCT.SupraclavicularRegionOfNeck, "CTVn_IMN": codes.SCT.Parasternal}
_SIDES = {"L": codes.SCT.Left, "R": codes.SCT.Right}


def segment_codes(name: str):
    """(category, type, type modifier or None, anatomic region or None, region modifier or None) of a name."""
    s = catalog.BY_NAME.get(name)
    if s is None:                                     # a proposal: a free-named CTV draft
        return codes.DCM.RTTarget, codes.SCT.CTV, None, None, None
    side = _SIDES.get(s.side) if s.side else None
    if s.kind == "MARKER":
        return codes.SCT.PhysicalObject, codes.SCT.Clip, None, None, None
    if s.kind == "CTV":
        stem = name.rsplit("_", 1)[0] if s.side else name
        return codes.DCM.RTTarget, codes.SCT.CTV, None, _CTV_REGIONS.get(stem), side
    organ = _ORGANS[name.rsplit("_", 1)[0] if name.startswith("Lung_") else name]
    return codes.SCT.AnatomicalStructure, organ, side, None, None


def _modifier(item, keyword: str, code) -> None:
    from highdicom.sr import CodedConcept

    setattr(item, keyword, [CodedConcept(code.value, code.scheme_designator, code.meaning)])


def _description(number: int, name: str, algorithm, proposal: bool):
    import highdicom as hd

    category, kind, type_modifier, region, region_modifier = segment_codes(name)
    color = PROPOSAL_COLOR if proposal else catalog.BY_NAME[name].color
    desc = hd.seg.SegmentDescription(
        segment_number=number, segment_label=name, segmented_property_category=category,
        segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=name,
        anatomic_regions=[region] if region is not None else None,
        display_color=hd.color.CIELabColor.from_rgb(*color))
    if type_modifier is not None:
        _modifier(desc.SegmentedPropertyTypeCodeSequence[0], "SegmentedPropertyTypeModifierCodeSequence",
                  type_modifier)
    if region is not None and region_modifier is not None:
        _modifier(desc.AnatomicRegionSequence[0], "AnatomicRegionModifierSequence", region_modifier)
    if proposal:
        desc.SegmentDescription = "PROPOSAL: automatic draft, review and edit before use"
    return desc


def export_seg(masks: Mapping[str, np.ndarray], ct: CTVolume, out_file: Path, *,
               proposals: Mapping[str, np.ndarray] | None = None,
               parameters: Mapping[str, Mapping[str, str]] | None = None) -> tuple[Path | None, list[str]]:
    """Write ``masks`` (catalog name -> bool [z, y, x] on ``ct``'s grid) and ``proposals`` as one SEG.

    ``parameters``: structure name -> the algorithm parameters of the model that made it (model, dataset,
    trainer, configuration, folds ...), recorded in its segment's Algorithm Identification. Returns (the
    file, or ``None`` when every structure is empty and there is nothing to write; the names left out as
    empty). Written atomically (temporary sibling, then rename).
    """
    import highdicom as hd
    import pydicom

    out_file = Path(out_file)
    items = [(n, np.asarray(m, bool), False) for n, m in masks.items()]
    items += [(n, np.asarray(m, bool), True) for n, m in (proposals or {}).items()]
    unknown = [n for n, _, proposal in items if not proposal and n not in catalog.BY_NAME]
    if unknown:
        raise ValueError(f"not catalog structure names: {unknown}")
    nx, ny, nz = ct.image.GetSize()
    bad = [n for n, m, _ in items if m.shape != (nz, ny, nx)]
    if bad:
        raise ValueError(f"masks {bad} are not on the CT grid {(nz, ny, nx)} [z, y, x]")
    empty = [n for n, m, _ in items if not m.any()]
    items = [it for it in items if it[1].any()]
    if not items:
        return None, empty

    algorithms: dict[tuple, object] = {}
    descriptions = []
    for number, (name, _, proposal) in enumerate(items, start=1):
        params = {k: str(v) for k, v in (parameters or {}).get(name, {}).items()}
        key = tuple(sorted(params.items()))
        if key not in algorithms:
            algorithms[key] = hd.AlgorithmIdentificationSequence(
                name=ALGORITHM_NAME, family=codes.DCM.ArtificialIntelligence, version=__version__,
                source="nnU-Net v2 plugin nnunet_breast", parameters=params or None)
        descriptions.append(_description(number, name, algorithms[key], proposal))

    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct.files]       # sorted like the array
    pixels = np.stack([m for _, m, _ in items], axis=-1)                           # [z, y, x, segment]
    header = ct.header
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=301,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=ALGORITHM_NAME,
        manufacturer_model_name=ALGORITHM_NAME, software_versions=__version__,
        device_serial_number=socket.gethostname()[:64], series_description="nnunet_breast SEG",
        content_description=SEG_DESCRIPTION[:64], content_label="NNUNET_AUTO", content_creator_name=None)
    if str(seg.FrameOfReferenceUID) != str(header.FrameOfReferenceUID):      # highdicom copies it; be explicit
        raise ValueError("SEG frame of reference differs from the CT's")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.{uuid.uuid4().hex}.tmp")
    try:
        seg.save_as(tmp)
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return out_file, empty
