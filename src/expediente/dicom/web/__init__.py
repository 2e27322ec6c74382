"""DICOMweb (PS3.18) under /dicomweb and WADO-URI under /wado: thin HTTP front ends of the archive."""
