"""The response cache: identical non-streaming chat requests answered without a key or upstream."""
