"""The runtime input pipeline: the common on-disk layout, the dataset reader, transforms and partner views."""
