"""The fault soak: mixed traffic through two gateways while keys, a provider, PostgreSQL and
Redis fail on a schedule; see README "Reliability"."""
