"""Parameters (schema, loading, content ids) and the experiment plan built from them."""
