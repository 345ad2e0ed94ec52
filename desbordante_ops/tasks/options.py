"""Help texts shared by several tasks (every argument of every task has help)."""

SET = "Override a setting, KEY=VALUE (repeatable); beats environment and env file"
DOCKER = "Use containers of the built image (host network) instead of local processes"
CLUSTER_ENV = "Cluster environment: stage or prod"
TAG = "Image tag (default: release tag of HEAD, else its short sha)"
DRY_RUN = "Print what would be done; change nothing"
ANY_ENV = "Environment: local (default), stage or prod"
