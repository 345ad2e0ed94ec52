"""What the CI machines need and the product does not: a Docker engine started here, a
debootstrap base image (nothing can be pulled), a throwaway registry on loopback."""
