"""The output stage: model files (no pickle), per-row predictions in Zarr, directories that appear only when complete."""
