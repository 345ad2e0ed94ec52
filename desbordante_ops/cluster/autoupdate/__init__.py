"""Stage follows a branch by itself: one cycle, its state file, the systemd units, install."""
