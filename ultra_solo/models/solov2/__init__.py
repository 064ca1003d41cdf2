"""SOLOv2: model, trainer, validator and predictor."""
