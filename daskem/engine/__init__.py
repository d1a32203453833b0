"""The distributed stage: map a kernel over the slabs of a Dask array, tree-reduce, and the EM loop that drives it."""
