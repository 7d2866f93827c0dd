"""A TensorFlow Serving compatible model server: Predict, GetModelMetadata and GetModelStatus over gRPC."""
