"""Builds the shipped CxrNet as an ONNX graph from weights/NAME.json + NAME.safetensors.

The graph is the network exactly as candle runs it in inference: every 3x3 convolution (no bias)
is followed by BatchNormalization (running statistics, eps 1e-5) and Relu, a 2x2 MaxPool follows
stages 1 to 3, then GlobalAveragePool, Flatten and Gemm give one logit per image. The batch size
is dynamic. ONNX Runtime folds the batch norms into the convolutions itself.

Usage: python export_onnx.py weights/cxrnet.json OUT.onnx
"""

import json
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: expected F32, found {info['dtype']}")
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[base + start : base + end], dtype="<f4").reshape(info["shape"])
    return tensors


def build(card, weights):
    widths = card["config"]["widths"]
    size = card["config"]["input_size"]
    nodes, inits = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    x = "input"
    last = len(widths) - 1
    for stage in range(len(widths)):
        blocks = 1 if stage == 0 else 2
        for b in range(blocks):
            p = f"stage{stage}.{b}"
            w = init(f"{p}.conv.weight", weights[f"{p}.conv.weight"])
            stride = 2 if stage == 0 else 1
            nodes.append(
                helper.make_node("Conv", [x, w], [f"{p}.conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])
            )
            bn = [init(f"{p}.bn.{k}", weights[f"{p}.bn.{k}"]) for k in ("weight", "bias", "running_mean", "running_var")]
            nodes.append(helper.make_node("BatchNormalization", [f"{p}.conv", *bn], [f"{p}.bn"], epsilon=1e-5))
            nodes.append(helper.make_node("Relu", [f"{p}.bn"], [f"{p}.relu"]))
            x = f"{p}.relu"
        if 0 < stage < last:
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{stage}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"pool{stage}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    hw = init("head.weight", weights["head.weight"])
    hb = init("head.bias", weights["head.bias"])
    nodes.append(helper.make_node("Gemm", ["flat", hw, hb], ["logit2d"], transB=1))
    nodes.append(helper.make_node("Flatten", ["logit2d"], ["logits"], axis=0))
    graph = helper.make_graph(
        nodes,
        "cxrnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "batch"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cxr-triage")
    onnx.checker.check_model(model)
    return model


def main():
    card_path, out = sys.argv[1], sys.argv[2]
    with open(card_path) as f:
        card = json.load(f)
    weights = read_safetensors(card_path[: -len(".json")] + ".safetensors")
    onnx.save(build(card, weights), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
