"""A submission's path, in order: admission, sequencing, the answer."""
