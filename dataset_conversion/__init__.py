"""DICOM-RT / NIfTI exports -> nnU-Net raw datasets."""
