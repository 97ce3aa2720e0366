"""The network as a graph: tracing, the one table of graph operations, and the head/tail split."""
