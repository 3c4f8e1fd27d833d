"""The paper's tables and figures assembled from the scores."""
