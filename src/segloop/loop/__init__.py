"""The use cases every face (CLI, server) calls: import, assemble, export; later rank, merge, rounds."""
