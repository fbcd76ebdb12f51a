"""DICOM-RT input/output: CT series, RTSTRUCT and RTDOSE, written and read the way TPS exports them."""
