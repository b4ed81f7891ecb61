"""Quickstart: synthetic customers -> profiles -> features -> segments.

Run:  python examples/quickstart.py
"""

import numpy as np

import segone
from segone.synth import generate

# 1. events: transactions, web events and CRM attributes (Arrow tables)
data = generate(20_000, seed=0)

# 2. one profile row per customer (pyarrow.Table)
profiles = segone.build_profiles(data.transactions, events=data.events, attributes=data.customers)
print(f"{profiles.num_rows} customers, {profiles.num_columns} profile columns")

# 3. scored features: float32, C-contiguous, N x D
scorer = segone.FeatureScorer()
X = scorer.fit_transform(profiles)

# 4. segments: mini-batch k-means with the scikit-learn estimator API
seg = segone.Segmenter(n_clusters=6, n_init=5, random_state=0).fit(X)

# 5. assignment with a confidence margin for every customer
res = segone.assign(X, seg.cluster_centers_, margin=True)
print("segment sizes:", np.bincount(res.labels).tolist())
print("least certain customers:", profiles.column("customer_id").to_numpy()[np.argsort(res.margin)[:5]].tolist())

# 6. a plain description of every segment
print(segone.describe_segments(profiles, res.labels, 6).select(["segment", "size", "label"]).to_pandas())
