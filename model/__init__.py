"""Builds the EfficientNet-Lite0 TensorFlow Serving SavedModel from the PyTorch weights package."""
