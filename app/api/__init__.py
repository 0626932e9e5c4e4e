"""Thin HTTP routers: parse, call the chat service, shape the answer."""
