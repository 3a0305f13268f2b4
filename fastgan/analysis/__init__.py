"""What a trained GAN learned: the seed papers' analyses as library calls (``fastgan analyze``).

One module per analysis, each with a ``run(model, out, ...)`` that writes its figure(s) and
``NAME.json`` (numbers and protocol) into ``out``; ``common.load_model`` opens a checkpoint or an
exported ONNX generator. Figures need matplotlib; dfeatures needs scikit-learn."""

ANALYSES = ("interpolate", "pick", "arithmetic", "neighbours", "dfeatures", "cas", "embeddings", "project")
