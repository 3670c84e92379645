"""Test helpers: real services (redis-server) started on free loopback ports."""
