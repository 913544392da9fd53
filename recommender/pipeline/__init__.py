"""The pipeline: sources, the build's stages (local or Dask), updates, the quality gate."""
