"""The client: the library an inference server calls: route queries, fetch their blocks."""
