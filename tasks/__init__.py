"""Which images, which classes, which episodes: datasets, splits and the episode sampler."""
