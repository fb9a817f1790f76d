"""Ferry runtime: serves TorchScript models over the Open Inference Protocol v2."""
