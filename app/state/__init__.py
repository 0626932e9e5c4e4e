"""Key-state backends: where pools, breakers and cursors live (this process, or Redis)."""
