"""Redis: the store every cache operation goes through, its URLs and topologies,
replica reads, the circuit breaker and the eviction-policy check."""
