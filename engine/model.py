"""The fitted model as plain data: JSON and NumPy arrays with a format version, never pickle."""

import os

import numpy as np

from segone.io import write_json

MODEL_FORMAT = "segone-model"
MODEL_VERSION = 1


def write_model(directory, seg, scorer):
    """Write centroids.npy, scorer.json and model.json into a new ``directory``."""
    os.makedirs(directory)
    np.save(os.path.join(directory, "centroids.npy"), seg.cluster_centers_, allow_pickle=False)
    with open(os.path.join(directory, "scorer.json"), "w") as f:
        f.write(scorer.to_json())
    write_json(
        {"format": MODEL_FORMAT, "version": MODEL_VERSION, "n_clusters": len(seg.cluster_centers_),
         "features": scorer.feature_names_out_,
         "params": {k: v for k, v in seg.get_params().items() if not isinstance(v, np.ndarray)}},
        os.path.join(directory, "model.json"),
    )  # fmt: skip
