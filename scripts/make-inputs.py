# Random float32 inputs for `kiln linalg` runs on the GPU machine
# (scripts/gpu-profile.sh, gpu-source.sh): one .npy per shape, printed.
# Usage: python3 make-inputs.py BASE SHAPE[,SHAPE...] [spd]
# A square first input gets n I added (kept regular), or with "spd" is
# made symmetric positive definite (M M^T + n I, for cholesky).
import sys
import numpy as np

base, shapes = sys.argv[1], sys.argv[2].split(",")
spd = len(sys.argv) > 3 and sys.argv[3] == "spd"
rng = np.random.default_rng(7)
for i, s in enumerate(shapes):
    dims = [int(d) for d in s.split("x")]
    a = rng.standard_normal(dims).astype(np.float32)
    if i == 0 and len(dims) == 2 and dims[0] == dims[1]:
        eye = dims[0] * np.eye(dims[0], dtype=np.float32)
        a = a @ a.T + eye if spd else a + np.eye(dims[0], dtype=np.float32)
    np.save(f"{base}_{i}.npy", a)
    print(f"{base}_{i}.npy")
