"""Datasets in the common on-disk layout: reading, writing, transforms, synthetic scenes and downloads."""
