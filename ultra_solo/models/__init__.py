"""Model families of ultra-solo."""
