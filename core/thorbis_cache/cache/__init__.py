"""The read path: key schemas, the codec and envelope, encryption, the near cache,
fills and leases, and the Cache that puts them together."""
