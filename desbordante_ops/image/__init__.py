"""The backend image: tags from git, build, push, wheelhouse; docker-py on the user's engine."""
