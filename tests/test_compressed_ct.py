"""Compressed CT series as PACS and TPS exports send them: read for prediction (inference.inputs) and converted
(`convert`) exactly like the uncompressed series, decoded only by the runtime dependencies' pydicom plugins;
a transfer syntax nothing installed decodes is refused with one line naming it."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert
from nnunet_breast.errors import UserError
from nnunet_breast.inference.inputs import list_inputs, read_input
from nnunet_breast.synth.cohort import write_cohort

# transfer syntax -> pydicom encoding plugin (test extra), or gdcm itself for JPEG Lossless, which pydicom cannot write
SYNTAXES = {JPEG2000Lossless: "pylibjpeg", JPEGLSLossless: "pyjpegls", RLELossless: "pydicom",
            JPEGLosslessSV1: "gdcm"}
RUNTIME_PLUGINS = {"gdcm", "pydicom"}      # python-gdcm (a dependency) and pydicom's own RLE decoder


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    write_cohort("clips", 1, out, seed=0, size="small", progress=False)
    return out


@pytest.fixture
def runtime_decoders_only(monkeypatch):
    """pydicom may decode only through what nnunet-breast's runtime dependencies provide (not the test extra's
    pylibjpeg / pyjpegls, nor Pillow, which matplotlib happens to bring)."""
    for syntax in SYNTAXES:
        dec = get_decoder(syntax)
        monkeypatch.setattr(dec, "_available", {k: v for k, v in dec._available.items() if k in RUNTIME_PLUGINS})
        assert dec.is_available, f"no runtime decoder for {syntax.name}"


def _gdcm_recode(src: Path, dst: Path, syntax: str) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()


def _signed(ds: pydicom.Dataset) -> None:
    """Store HU directly as signed 16 bit (intercept 0), as many scanners do; the padding far below air."""
    hu = ds.pixel_array.astype(np.int32) * int(float(ds.RescaleSlope)) + int(float(ds.RescaleIntercept))
    hu[:2] = -3024
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit, ds.RescaleIntercept = 1, 16, 15, "0"
    ds.PixelData = hu.astype(np.int16).tobytes()


def _recode(src_root: Path, dst_root: Path, syntax: str, signed: bool = False) -> Path:
    """A copy of the export with every CT slice re-encoded in ``syntax``; other files copied as they are."""
    for f in sorted(p for p in src_root.rglob("*") if p.is_file()):
        out = dst_root / f.relative_to(src_root)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds = pydicom.dcmread(f, force=True) if f.suffix == ".dcm" else None
        if ds is None or ds.get("Modality") != "CT":
            shutil.copy(f, out)
            continue
        if signed:
            _signed(ds)
        if syntax == ExplicitVRLittleEndian:
            ds.save_as(out, enforce_file_format=True)
        elif SYNTAXES[syntax] == "gdcm":
            tmp = out.with_suffix(".plain")
            ds.save_as(tmp, enforce_file_format=True)
            _gdcm_recode(tmp, out, syntax)
            tmp.unlink()
        else:
            # a lossless change of transfer syntax keeps the SOP instance: the RTSTRUCT still references it
            ds.compress(syntax, encoding_plugin=SYNTAXES[syntax], generate_instance_uid=False)
            ds.save_as(out, enforce_file_format=True)
        assert pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    return dst_root


def _read_one(root: Path):
    [entry] = list_inputs(root)
    return read_input(entry)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned12", "signed16"])
@pytest.mark.parametrize("syntax", list(SYNTAXES), ids=[s.name.split(" (")[0] for s in SYNTAXES])
def test_prediction_inputs_read_compressed_series_exactly(export, tmp_path, syntax, signed, runtime_decoders_only):
    plain = _recode(export, tmp_path / "plain", ExplicitVRLittleEndian, signed) if signed else export
    ref = _read_one(plain)
    packed = _recode(export, tmp_path / "packed", syntax, signed)
    sizes = [sum(f.stat().st_size for f in r.rglob("CT*.dcm")) for r in (plain, packed)]
    assert sizes[1] < sizes[0] * 0.8                                   # really compressed
    got = _read_one(packed)
    assert got.case_id == ref.case_id
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got.image), sitk.GetArrayFromImage(ref.image))
    assert got.image.GetSpacing() == ref.image.GetSpacing() and got.image.GetOrigin() == ref.image.GetOrigin()
    assert got.dicom.slice_sop_uids == ref.dicom.slice_sop_uids          # the RTSTRUCT export still points at them
    assert float(sitk.GetArrayViewFromImage(got.image).max()) > 1500    # clips' metal survives (not clipped to 8 bit)


@pytest.fixture(scope="module")
def plain_conversion(export, tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw_plain")
    report = convert(ConvertOptions("clips", export, 601, "Plain", raw), progress=False)
    assert len(report.converted) == 1
    return report.dataset_dir


@pytest.mark.parametrize("syntax", list(SYNTAXES), ids=[s.name.split(" (")[0] for s in SYNTAXES])
def test_convert_reads_compressed_series_exactly(export, plain_conversion, tmp_path, syntax, runtime_decoders_only):
    packed = _recode(export, tmp_path / "packed", syntax)
    report = convert(ConvertOptions("clips", packed, 602, "Packed", tmp_path / "raw"), progress=False)
    assert len(report.converted) == 1 and not report.failed, report.cases
    for sub in ("imagesTr", "labelsTr"):
        ref = sorted((plain_conversion / sub).glob("*.nii.gz"))
        got = sorted((report.dataset_dir / sub).glob("*.nii.gz"))
        assert [p.name for p in got] == [p.name for p in ref] and got
        for a, b in zip(ref, got):
            ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
            np.testing.assert_array_equal(sitk.GetArrayFromImage(ib), sitk.GetArrayFromImage(ia))
            assert ia.GetSpacing() == ib.GetSpacing() and ia.GetOrigin() == ib.GetOrigin()
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(got[0])))
    assert label.any()                                                 # the clips were rasterised


def test_missing_decoder_is_refused_with_one_line_naming_the_syntax(export, tmp_path, monkeypatch):
    packed = _recode(export, tmp_path / "packed", JPEG2000Lossless)
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})       # as if python-gdcm were missing
    with pytest.raises(UserError) as e:
        _read_one(packed)
    msg = str(e.value)
    assert "JPEG 2000 Image Compression (Lossless Only)" in msg and "python-gdcm" in msg and "\n" not in msg
    report = convert(ConvertOptions("clips", packed, 603, "NoDecoder", tmp_path / "raw"), progress=False)
    assert not report.converted and "JPEG 2000 Image Compression" in str(report.cases)


def test_syntax_without_any_decoder_is_refused_by_the_cli(export, tmp_path):
    """An MPEG-2 video transfer syntax on CT slices: pydicom has no pixel decoder for it at all."""
    packed = _recode(export, tmp_path / "packed", JPEG2000Lossless)
    for f in packed.rglob("CT*.dcm"):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.save_as(f)
    r = subprocess.run([str(Path(sys.executable).parent / "nnunet-breast"), "predict", "-i", packed, "-o",
                        tmp_path / "out", "--model", "clips", "--clips-method", "threshold"],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "MPEG2 Main Profile / Main Level" in lines[0] and "1.2.840.10008.1.2.4.100" in lines[0]
    assert not (tmp_path / "out").exists()                              # refused before anything was written
