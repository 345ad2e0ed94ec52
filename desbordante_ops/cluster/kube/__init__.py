"""The typed Kubernetes client of the toolkit: connection, object helpers, errors, pod exec."""
