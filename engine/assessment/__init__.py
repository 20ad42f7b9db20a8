"""Accuracy, area estimation and change statistics of finished maps."""
