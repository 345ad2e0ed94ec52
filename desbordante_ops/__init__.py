"""desbordante-ops: the Invoke toolkit that takes the Desbordante service to a running stack.

Layers (a unit test enforces them): `tasks` (thin Invoke tasks, one module per area of
`invoke --list`) -> `backup` (backups and restores of the local stack and the clusters) -> area
libraries `local`, `image`, `cluster` -> `core` (settings, console, polling, checks). Libraries
never import `tasks`.
"""
