"""The stack's Secrets: specs, generation, rotation, the password stores, the image pull Secret."""
