"""Times ONNX Runtime on the exported CxrNet, after checking it gives our scores.

Usage: python bench_ort.py MODEL.onnx PARITY_DIR THREADS
PARITY_DIR holds inputs.f32 ([n, 1, s, s] little-endian f32) and logits.f32 ([n]) written by our
benchmark for the same inputs. Prints one JSON line: images/s at batch 1 and batch 32.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def images_per_sec(session, batch, size, min_secs=3.0):
    x = np.random.default_rng(1).standard_normal((batch, 1, size, size), dtype=np.float32)
    for _ in range(3):
        session.run(None, {"input": x})
    runs, started = 0, time.perf_counter()
    times = []
    while time.perf_counter() - started < min_secs or runs < 5:
        t = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - t)
        runs += 1
    return batch / float(np.median(times))


def main():
    model, parity_dir, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[2]
    inputs = np.fromfile(f"{parity_dir}/inputs.f32", dtype="<f4").reshape(-1, 1, size, size)
    ours = np.fromfile(f"{parity_dir}/logits.f32", dtype="<f4")
    theirs = session.run(None, {"input": inputs})[0].reshape(-1)
    max_diff = float(np.max(np.abs(theirs - ours)))
    if not max_diff < 1e-3 * max(1.0, float(np.max(np.abs(ours)))):
        raise SystemExit(f"ONNX Runtime disagrees with cxr-triage: max logit difference {max_diff}")
    print(
        json.dumps(
            {
                "onnxruntime": ort.__version__,
                "threads": threads,
                "parity_max_logit_diff": max_diff,
                "batch1_images_per_sec": images_per_sec(session, 1, size),
                "batch32_images_per_sec": images_per_sec(session, 32, size),
            }
        )
    )


if __name__ == "__main__":
    main()
