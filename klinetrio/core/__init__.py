"""Pure logic: no Trio, no I/O. Models, interval arithmetic, gaps, backoff, weights, budgets."""
