"""Local process runner for the main job, benchmarks and end-to-end tests."""
