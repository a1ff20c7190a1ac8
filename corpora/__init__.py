"""The registry of training texts, their cleaning, and how to get them."""
