"""Fault drills: real API and worker processes on loopback, real PostgreSQL and RabbitMQ."""
