"""HTTP plumbing shared by the log and the witness: the error middleware, parameters, responses."""
