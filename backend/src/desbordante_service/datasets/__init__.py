"""Datasets: uploaded CSV files and their metadata."""
