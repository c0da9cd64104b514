"""Offline dataset builders: the dataset registry, download, conversion of upstream archives, synthetic scenes, preprocessing."""
