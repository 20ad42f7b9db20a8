"""Pixel classifiers on the features: the Random Forest (arrays, no pickling) and the UniDiff MLP."""
