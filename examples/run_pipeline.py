"""The whole job on a Parquet dataset, from Python (same as `segone run`).

Run:  python examples/run_pipeline.py /tmp/segone-data /tmp/segone-out
"""

import sys

import segone

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/segone-data"
out_dir = sys.argv[2] if len(sys.argv) > 2 else "/tmp/segone-out"

segone.synth.write_dataset(data_dir, 200_000, seed=0, overwrite=True, progress=True)
result = segone.run(data_dir, out_dir, n_clusters=6, overwrite=True, verbose=True)
print(result.segments.select(["segment", "size", "share", "label"]).to_pandas())
print("timings:", result.summary["timings_s"])
