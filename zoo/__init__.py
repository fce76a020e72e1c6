"""zoo: E(3)-equivariant model zoo."""
