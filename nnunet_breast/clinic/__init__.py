"""The clinic's loop: a DICOM node (`serve`) and a watch folder (`watch`) that contour incoming CTs."""
