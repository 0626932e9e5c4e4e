"""Who may spend the keys: client keys, service token, per-user rate limits, prices and budgets."""
