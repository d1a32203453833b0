"""The pipeline: a typed YAML config, the cluster it names, and ``run`` / ``validate`` / ``predict``, where the stages meet."""
