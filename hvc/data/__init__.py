"""Datasets: the download registry, download and extraction, the built-in demo, training shards."""
