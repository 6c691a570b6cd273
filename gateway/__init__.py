"""SMS gateway with a shared customer inbox."""
