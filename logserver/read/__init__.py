"""The read path: proofs, tiles and entry bundles, with their caches."""
