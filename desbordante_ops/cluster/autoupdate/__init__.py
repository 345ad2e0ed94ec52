"""autoupdate."""
