"""Training metrics: the catalog that names and explains each metric, and the sink that writes them."""
