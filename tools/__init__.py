"""Developer tools: protobuf descriptors, the search vocabulary, the settings tables of docs/configuration.md."""
