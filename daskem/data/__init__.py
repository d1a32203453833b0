"""The source stage: open Zarr stores lazily, plan the slabs each task reads, check the input, make synthetic data."""
