"""The server itself: the pinned k3s install, images loaded into it, the host checks."""
