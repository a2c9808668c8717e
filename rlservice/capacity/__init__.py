"""Pure local capacity logic: no I/O, unit-testable without Redis."""
