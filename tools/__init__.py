"""Developer tools: protobuf descriptor capture and README generation."""
