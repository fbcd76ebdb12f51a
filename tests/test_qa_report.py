"""Per-case QA report (inference/qa_report.py) and the cohort volume ranges the converter stores with the model."""
import base64
import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert
from nnunet_breast.inference.qa_report import cohort_ranges, model_provenance, write_qa_report
from nnunet_breast.structures.catalog import BREAST_STRUCTURES
from nnunet_breast.structures.regions import OverlapEncoding

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
SPACING_XYZ = (2.0, 1.5, 3.0)
SHAPE_ZYX = (12, 30, 40)
STRUCTURE_COLUMNS = 6


class Page(HTMLParser):
    """Walks the page: tag nesting errors, text, table rows (cell texts and classes), img sources, links."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.text = [], [], []
        self.rows, self.imgs, self.refs, self.tags = [], [], [], set()
        self._row = self._cell = None
        self.feed(text)
        self.close()
        self.errors += [f"unclosed <{t}>" for t in self.stack]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.refs += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"text": "", "flag": "flag" in (attrs.get("class") or "").split()}

    def handle_startendtag(self, tag, attrs):
        if tag in VOID:
            self.handle_starttag(tag, attrs)
        else:
            self.errors.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void <{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr":
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data

    def row(self, first_cell: str) -> list[dict]:
        found = [r for r in self.rows if r and r[0]["text"].strip() == first_cell]
        assert len(found) == 1, (first_cell, [r[0]["text"] for r in self.rows])
        return found[0]

    def summary_count(self) -> int:
        return int(re.search(r"(\d+) flags?:", " ".join(self.text)).group(1))


def parse(path: Path) -> Page:
    page = Page(Path(path).read_text(encoding="utf-8"))
    assert not page.errors, page.errors
    return page


def ct(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    """Tissue (0 HU) in a box, air around it; SimpleITK (x, y, z) spacing ``SPACING_XYZ``."""
    hu = np.full(SHAPE_ZYX, -1000, np.float32)
    hu[:, 5:25, 5:35] = 0
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin((-40.0, -20.0, 0.0))
    img.SetDirection(direction)
    return img


def box(x0, x1, y0=10, y1=20, z0=2, z1=10) -> np.ndarray:
    m = np.zeros(SHAPE_ZYX, np.uint8)
    m[z0:z1, y0:y1, x0:x1] = 1
    return m


def cc(mask) -> float:
    return float(np.count_nonzero(mask)) * float(np.prod(SPACING_XYZ)) / 1000.0


def synthetic_masks() -> dict[str, np.ndarray]:
    """Array column 20 is the midline (the spinal cord); with an identity direction +x (columns > 20) is the
    patient's left."""
    return {"SpinalCord": box(19, 22, 18, 20), "Heart": box(14, 26, 8, 16),
            "Lung_L": box(24, 33), "Lung_R": box(7, 17),
            "CTVp_breast_L": box(25, 34, 5, 9), "CTVp_breast_R": box(8, 15, 5, 7)}


def report(tmp_path, masks, **kw) -> Page:
    kw.setdefault("image", ct())
    path = write_qa_report(tmp_path / "qa.html", case_id=kw.pop("case_id", "case_001"), masks=masks, **kw)
    assert path == tmp_path / "qa.html"
    return parse(path)


def flagged(page: Page, name: str) -> list[str]:
    return [c["text"] for c in page.row(name) if c["flag"]]


def test_page_is_well_formed_escaped_and_has_a_row_per_structure(tmp_path):
    masks = {**synthetic_masks(), "Odd<b>&name": box(2, 4)}
    page = report(tmp_path, masks)
    raw = (tmp_path / "qa.html").read_text()
    for name, m in masks.items():
        row = page.row(name)
        assert len(row) == STRUCTURE_COLUMNS
        assert float(row[1]["text"]) == pytest.approx(cc(m), abs=0.006)
    assert "Odd&lt;b&gt;&amp;name" in raw and "Odd<b>" not in raw
    assert "b" not in page.tags and "script" not in page.tags
    assert "no cohort range stored with the model" in page.row("Heart")[3]["text"]
    assert "single fold / not computed" in page.row("Heart")[5]["text"]
    assert page.summary_count() == 0 and not any(c["flag"] for r in page.rows for c in r)


def test_volume_outside_the_cohort_range_is_flagged_and_inside_is_not(tmp_path):
    masks = synthetic_masks()
    ranges = {"Heart": {"p5": cc(masks["Heart"]) * 0.8, "p95": cc(masks["Heart"]) * 1.2, "n": 40},
              "Lung_L": {"p5": cc(masks["Lung_L"]) * 1.5, "p95": cc(masks["Lung_L"]) * 3, "n": 40},
              "Lung_R": {"p5": cc(masks["Lung_R"]) * 0.2, "p95": cc(masks["Lung_R"]) * 0.5, "n": 38}}
    page = report(tmp_path, {**masks, "Esophagus": np.zeros(SHAPE_ZYX, np.uint8)}, cohort_ranges=ranges)
    assert flagged(page, "Heart") == [] and "within cohort range" in page.row("Heart")[3]["text"]
    assert flagged(page, "Lung_L") == ["outside cohort range (below the 5th percentile)"]
    assert flagged(page, "Lung_R") == ["outside cohort range (above the 95th percentile)"]
    assert "(n = 38)" in page.row("Lung_R")[2]["text"]
    assert "no cohort range for this structure" in page.row("SpinalCord")[3]["text"]
    assert flagged(page, "Esophagus") == ["empty: nothing predicted"]
    assert page.summary_count() == 3 == sum(c["flag"] for r in page.rows for c in r)


def test_a_left_structure_on_the_patients_right_is_flagged(tmp_path):
    masks = synthetic_masks()
    masks["CTVp_breast_L"] = box(6, 16, 5, 9)                   # columns < 20: the patient's right
    page = report(tmp_path, masks)
    assert len(flagged(page, "CTVp_breast_L")) == 1 and "wrong side" in flagged(page, "CTVp_breast_L")[0]
    assert flagged(page, "Lung_L") == flagged(page, "Lung_R") == flagged(page, "CTVp_breast_R") == []
    assert "midline" in page.row("Heart")[4]["text"] and "SpinalCord centroid" in " ".join(page.text)
    # the same arrays in a CT whose columns run to the patient's right (e.g. prone): the sides swap
    page = report(tmp_path, masks, image=ct((-1, 0, 0, 0, -1, 0, 0, 0, 1)))
    assert flagged(page, "CTVp_breast_L") == []
    assert all(flagged(page, n) for n in ("Lung_L", "Lung_R", "CTVp_breast_R"))


def test_phantom_sides_pass_and_swapped_names_are_flagged(tmp_path):
    from nnunet_breast.synth.cohort import make_case

    case = make_case("breast", 0, seed=0, labels="full")
    img = sitk.GetImageFromArray(case.hu)
    img.SetSpacing(case.grid.spacing)
    img.SetOrigin(case.grid.origin)
    lateral = [n for n in case.masks if n.endswith(("_L", "_R"))]
    page = report(tmp_path, case.masks, image=img)
    assert lateral and not any(flagged(page, n) for n in lateral)
    swap = {n: n[:-1] + ("R" if n.endswith("L") else "L") for n in lateral}
    page = report(tmp_path, {swap.get(n, n): m for n, m in case.masks.items()}, image=img)
    assert all(flagged(page, n) for n in lateral)


def test_treated_side_and_fold_agreement(tmp_path):
    masks = synthetic_masks()                         # the left breast CTV is the larger one
    page = report(tmp_path, masks, fold_agreement={"Heart": 0.93, "Lung_L": 0.55}, agreement_threshold=0.8)
    assert flagged(page, "Lung_L") == ["0.550: folds disagree"] and flagged(page, "Heart") == []
    assert page.row("Heart")[5]["text"] == "0.930" and "not computed" in page.row("Lung_R")[5]["text"]
    assert page.row("Treated side")[1]["text"].startswith("left, from the larger")
    assert not page.row("Treated side")[1]["flag"]
    page = report(tmp_path, masks, side="R")
    assert page.row("Treated side")[1]["flag"] and page.summary_count() == 1
    assert "larger predicted breast CTV is the left" in " ".join(page.text)
    with pytest.raises(ValueError, match="side"):
        report(tmp_path, masks, side="both")


def _clips_json(mask: np.ndarray, image: sitk.Image) -> dict:
    from nnunet_breast.clips.predict import ClipPrediction
    from nnunet_breast.clips.table import clip_table
    from nnunet_breast.clips.tumour_bed import propose_tumour_bed

    bed = propose_tumour_bed(mask, image.GetSpacing()[::-1], margin_mm=10.0, outlier_mm=40.0)
    pred = ClipPrediction("case_001", mask, clip_table(mask, image), info={"method": "threshold"}, image=image)
    return json.loads(json.dumps(pred.to_json(tumour_bed_proposal={
        "name": "CTV_TumorBed_proposal", "volume_cc": round(float(bed.mask.sum()) * 0.009, 2), "margin_mm": 10.0,
        "clips_used": bed.clips_used, "clips_excluded": [e.__dict__ for e in bed.clips_excluded],
        "clipped_to": "body", "note": bed.note})))


def test_clips_table_proposal_and_clip_side(tmp_path):
    masks = synthetic_masks()
    clips = np.zeros(SHAPE_ZYX, bool)
    for z, y, x in ((4, 6, 27), (6, 7, 30), (8, 6, 28), (5, 20, 3)):         # three left, one far outlier
        clips[z, y, x] = True
    image = ct()
    content = _clips_json(clips, image)
    page = report(tmp_path, {**masks, "Clips": clips}, image=image, clips=content, side="L")
    table = [r for r in page.rows if r and r[0]["text"].strip().isdigit()]
    assert len(table) == len(content["clips"]) == 4
    for row, clip in zip(table, content["clips"]):
        assert row[1]["text"] == ", ".join(f"{v:.1f}" for v in clip["centroid_mm"])
    bed = content["tumour_bed_proposal"]
    assert bed["clips_used"] == 3 and len(bed["clips_excluded"]) == 1
    assert page.row("Clips used")[1]["text"] == "3" and page.row("Clips excluded")[1]["text"].startswith("1:")
    assert page.row("Volume (cc)")[1]["text"] == str(bed["volume_cc"])
    assert not page.row("Clip side")[1]["flag"] and "patient's left" in page.row("Clip side")[1]["text"]
    page = report(tmp_path, {**masks, "Clips": clips}, image=image, clips=content, side="R")
    assert page.row("Clip side")[1]["flag"] and any("clips lie on the patient's left" in t for t in page.text)


def test_preview_is_embedded_and_provenance_shown(tmp_path):
    from nnunet_breast.inference.preview import write_preview

    image = ct()
    masks = synthetic_masks()
    png = write_preview(sitk.GetArrayFromImage(image), masks, SPACING_XYZ[::-1], tmp_path / "preview.png")
    provenance = {"model folder": "/models/Dataset501", "folds": [0, 1, 2], "checkpoint sha256": {"0": "ab12"}}
    page = report(tmp_path, masks, image=image, preview_png=png, provenance=provenance)
    (src,) = page.imgs
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    assert page.refs == [src]                                   # nothing fetched from anywhere else
    raw = (tmp_path / "qa.html").read_text()
    assert 'src="http' not in raw and str(tmp_path) not in raw and "<link" not in raw
    assert page.row("model folder")[1]["text"] == "/models/Dataset501"
    assert page.row("folds")[1]["text"] == "[0, 1, 2]"
    import nnunet_breast
    assert page.row("nnunet_breast")[1]["text"] == nnunet_breast.__version__
    page = report(tmp_path, masks, image=image, preview_png=None)
    assert page.imgs == [] and "No preview image." in page.text


def test_cohort_ranges_read_from_the_model_folder(tmp_path):
    assert cohort_ranges(tmp_path) is None
    (tmp_path / "dataset.json").write_text(json.dumps({"nnunet_breast": {"encoding": {}}}))
    assert cohort_ranges(tmp_path) is None                      # a model converted before ranges were stored
    ranges = {"Heart": {"p5": 400.0, "p95": 800.0, "n": 12}}
    (tmp_path / "dataset.json").write_text(json.dumps({"nnunet_breast": {"volume_cc": ranges}}))
    assert cohort_ranges(tmp_path) == ranges


def test_model_provenance_hashes_the_checkpoints_used(tmp_path, monkeypatch):
    import hashlib

    from nnunet_breast.inference.predictor import ModelRef

    model = tmp_path / "Dataset501_Test" / "Tr__nnUNetPlans__3d_fullres"
    for fold in (0, 1):
        (model / f"fold_{fold}").mkdir(parents=True)
        (model / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(bytes([fold]) * 3_000_000)
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    expected = {f"fold_{f}": hashlib.sha256(bytes([f]) * 3_000_000).hexdigest() for f in (0, 1)}
    info = model_provenance(ModelRef(501, "Tr", "3d_fullres"))
    assert info["checkpoint sha256"] == expected and info["model folder"] == str(model)
    assert model_provenance(ModelRef(501, "Tr", "3d_fullres", folds=(1,)))["checkpoint sha256"] == {
        "fold_1": expected["fold_1"]}


def _label_volumes(ds: Path) -> dict[str, dict[str, float]]:
    """case -> structure -> cc with voxels, decoded from labelsTr, for the structures each case annotates."""
    info = json.loads((ds / "dataset.json").read_text())["nnunet_breast"]
    enc = OverlapEncoding.from_json(info["encoding"])
    out = {}
    for cid, names in info["annotated"].items():
        img = sitk.ReadImage(str(ds / "labelsTr" / f"{cid}.nii.gz"))
        voxel_cc = float(np.prod(img.GetSpacing())) / 1000.0
        masks = enc.decode(sitk.GetArrayFromImage(img))
        out[cid] = {n: masks[n].sum() * voxel_cc for n in names if masks[n].any()}
    return out


def _expected_ranges(volumes: dict[str, dict[str, float]]) -> dict[str, dict]:
    out = {}
    for n in BREAST_STRUCTURES:
        v = [c[n] for c in volumes.values() if n in c]
        if v:
            out[n] = {"p5": np.percentile(v, 5), "p95": np.percentile(v, 95), "n": len(v)}
    return out


def _assert_ranges(ds: Path, expected: dict[str, dict]) -> dict:
    got = json.loads((ds / "dataset.json").read_text())["nnunet_breast"]["volume_cc"]
    assert set(got) == set(expected)
    for n, r in got.items():
        assert r["n"] == expected[n]["n"] and r["p5"] <= r["p95"], n
        assert r["p5"] == pytest.approx(expected[n]["p5"], abs=2e-3) and r["p95"] == pytest.approx(
            expected[n]["p95"], abs=2e-3), n
    return got


def test_converter_stores_the_cohort_volume_ranges(breast_dataset):
    ds = breast_dataset.dataset_dir
    volumes = _label_volumes(ds)
    got = _assert_ranges(ds, _expected_ranges(volumes))
    assert all(r["n"] == len(breast_dataset.converted) == 5 for r in got.values()) and len(got) == 20
    assert any(r["p5"] < r["p95"] for r in got.values())
    with open(ds / "cohort.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    for cid, v in volumes.items():
        for n in BREAST_STRUCTURES:
            assert float(rows[cid][f"{n}_cc"]) == pytest.approx(v[n], abs=1e-3)


def test_structures_a_case_lacks_are_not_counted(breast_dataset, tmp_path):
    """NIfTI cases with some structures left out: n counts the cases that have each, the range only theirs."""
    ds = breast_dataset.dataset_dir
    info = json.loads((ds / "dataset.json").read_text())["nnunet_breast"]
    enc = OverlapEncoding.from_json(info["encoding"])
    given = {0: ("Heart", "Lung_L", "Lung_R"), 1: ("Heart", "Lung_L"), 2: ("Heart",)}
    for i, cid in enumerate(sorted(info["annotated"])[:3]):
        (tmp_path / "src" / f"p{i}" / "masks").mkdir(parents=True)
        image = ds / "imagesTr" / f"{cid}_0000.nii.gz"
        shutil.copy(image, tmp_path / "src" / f"p{i}" / "image.nii.gz")
        label = sitk.ReadImage(str(ds / "labelsTr" / f"{cid}.nii.gz"))
        for name, m in enc.decode(sitk.GetArrayFromImage(label)).items():
            if name in given[i]:
                out = sitk.GetImageFromArray(m.astype(np.uint8))
                out.CopyInformation(label)
                sitk.WriteImage(out, str(tmp_path / "src" / f"p{i}" / "masks" / f"{name}.nii.gz"))
    rep = convert(ConvertOptions("breast", tmp_path / "src", 503, "Partial", tmp_path / "raw"), progress=False)
    assert len(rep.converted) == 3
    got = _assert_ranges(rep.dataset_dir, _expected_ranges(_label_volumes(rep.dataset_dir)))
    assert {n: r["n"] for n, r in got.items()} == {"Heart": 3, "Lung_L": 2, "Lung_R": 1}
    assert got["Lung_R"]["p5"] == got["Lung_R"]["p95"] > 0


def test_a_cohort_csv_without_volume_columns_gets_them_from_the_labels(breast_dataset, breast_export, tmp_path):
    raw = tmp_path / "raw"
    ds = raw / breast_dataset.dataset_dir.name
    shutil.copytree(breast_dataset.dataset_dir, ds)
    before = json.loads((ds / "dataset.json").read_text())
    expected = before["nnunet_breast"].pop("volume_cc")
    (ds / "dataset.json").write_text(json.dumps(before))
    with open(ds / "cohort.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    old_columns = [c for c in rows[0] if not c.endswith("_cc")]
    for r in rows[:2]:                                             # two cases never contoured the heart
        r["structures_missing"] = "Heart"
    with open(ds / "cohort.csv", "w", newline="") as f:
        w = csv.DictWriter(f, old_columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    rep = convert(ConvertOptions("breast", breast_export, 501, "Test", raw), progress=False)
    assert not rep.converted and any("without volume columns" in d for d in rep.decisions)
    got = _assert_ranges(ds, _expected_ranges(_label_volumes(ds)))
    assert got["Heart"]["n"] == 3 and expected["Heart"]["n"] == 5
    for n in set(expected) - {"Heart"}:                           # the others as measured while converting
        assert got[n]["n"] == expected[n]["n"], n
        assert (got[n]["p5"], got[n]["p95"]) == pytest.approx((expected[n]["p5"], expected[n]["p95"]), abs=2e-3), n
    with open(ds / "cohort.csv", newline="") as f:
        assert "Heart_cc" in next(csv.DictReader(f))                # written back: read once


def _browser() -> str | None:
    return next((b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if b), None)


@pytest.mark.skipif(_browser() is None, reason="no Chromium / Chrome installed to render the page headless")
def test_page_renders_in_a_headless_browser(tmp_path):
    from PIL import Image

    from nnunet_breast.inference.preview import write_preview

    image, masks = ct(), synthetic_masks()
    png = write_preview(sitk.GetArrayFromImage(image), masks, SPACING_XYZ[::-1], tmp_path / "preview.png")
    page = write_qa_report(tmp_path / "qa.html", case_id="case_001", image=image, masks=masks, preview_png=png)
    shot = tmp_path / "shot.png"
    subprocess.run([_browser(), "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
                    "--window-size=1200,1600", page.resolve().as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 5 and (pixels < 128).mean() > 0.005           # text, tables and the preview drawn
