"""The inference service: validates images, classifies them through TensorFlow Serving, and derives search tags."""
