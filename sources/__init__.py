"""Named sources: models and data sets built or fetched here once, below serving and training."""
