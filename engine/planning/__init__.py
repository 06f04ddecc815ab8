"""Planning: a validated spec becomes frozen run plans (sizes, data, FLOPs, identity, status) and
the specs those runs depend on, in pure Python (no JAX), so validation and `engine plan` stay fast."""
