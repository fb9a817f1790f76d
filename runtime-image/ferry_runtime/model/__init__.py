"""Models: the ``model.json`` config, the model interface and the TorchScript loader."""
