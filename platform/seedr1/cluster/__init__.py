"""Running on a Ray cluster: what a job asks of it (``demands``), whether that fits (``fit``, ``check``), the stores it
needs (``stores``), where its outputs go (``outputs``), and the one line a failed job ends with (``failures``)."""
