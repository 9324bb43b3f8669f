"""Loading the private keys (the log's, a witness's, authorities'), and the log key's signing."""
