"""Export a fold's ``CrossEncoder`` to ONNX, and quantise it to int8 for ONNX Runtime on CPU.

The model's batch carries ``nn.EmbeddingBag`` inputs as (flat ids, offsets) and ID columns in a
nested dict; ONNX wants flat named tensors with fixed rank. ``OnnxCrossEncoder`` takes plain
padded tensors instead: each unit bag is a (batch, n_units) id matrix padded with -1, averaged
under its mask, which is what ``EmbeddingBag(mode="mean")`` computes (an empty bag gives zeros).
The graph ends in probabilities (softmax / sigmoid), so the runtime needs no post-processing.
``plain_inputs`` turns a ``PairCollator`` batch into those tensors.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from esci.artifacts import atomic_path
from finetune.inputs import ID_FIELDS, UNIT_FIELDS
from finetune.model import CrossEncoder, pool

UNIT_PAD = -1
OPSET = 17


def _bag_mean(bag: nn.EmbeddingBag, ids: torch.Tensor) -> torch.Tensor:
    mask = (ids != UNIT_PAD).unsqueeze(-1).to(bag.weight.dtype)
    rows = nn.functional.embedding(ids.clamp(min=0), bag.weight)
    return (rows * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class OnnxCrossEncoder(nn.Module):
    """A trained ``CrossEncoder`` with plain tensor inputs and probability outputs."""

    def __init__(self, model: CrossEncoder, token_types: bool):
        super().__init__()
        self.model = model.eval()
        self.token_types = token_types
        self.input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
        if model.id_emb is not None:
            self.input_names += [f"id_{name}" for name in ID_FIELDS]
        if model.char_bag is not None:
            self.input_names += [f"units_{name}" for name, _, _ in UNIT_FIELDS]
        self.output_names = model.tasks

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = dict(zip(self.input_names, inputs))
        m = self.model
        kwargs = {k: x[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in x}
        hidden = m.encoder(**kwargs).last_hidden_state
        parts = [pool(hidden, x["attention_mask"], m.pooling)]
        if m.id_emb is not None:
            parts += [m.id_emb[name](x[f"id_{name}"]) for name in ID_FIELDS]
        if m.char_bag is not None:
            for name, _, kind in UNIT_FIELDS:
                parts.append(_bag_mean(m.char_bag if kind == "char" else m.word_bag, x[f"units_{name}"]))
        h = m.mlp(torch.cat(parts, dim=1))
        out = []
        for task in self.output_names:
            z = m.heads[task](h)
            out.append(torch.softmax(z, -1) if m.heads[task].out_features > 1 else torch.sigmoid(z[:, 0]))
        return tuple(out)


def _padded_bag(flat: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """EmbeddingBag (flat ids, start offsets) -> (n_bags, longest bag) ids padded with ``UNIT_PAD``."""
    lengths = np.diff(np.append(starts, len(flat)))
    out = np.full((len(starts), max(int(lengths.max(initial=0)), 1)), UNIT_PAD, dtype=np.int64)
    cols = np.arange(len(flat)) - np.repeat(starts, lengths)
    out[np.repeat(np.arange(len(starts)), lengths), cols] = flat
    return out


def plain_inputs(batch: dict, input_names: list[str]) -> dict[str, np.ndarray]:
    """A ``PairCollator`` batch as the exported graph's named int64 arrays."""
    out = {}
    for name in input_names:
        if name.startswith("id_"):
            out[name] = batch["ids"][name[3:]].numpy()
        elif name.startswith("units_"):
            flat, starts = batch["units"][name[6:]]
            out[name] = _padded_bag(flat.numpy(), starts.numpy())
        else:
            out[name] = batch[name].numpy()
    return out


def export_onnx(model: CrossEncoder, example_batch: dict, path: Path) -> Path:
    """Write ``path`` (atomically) from the model in eval mode; batch and lengths are dynamic axes."""
    wrapper = OnnxCrossEncoder(model, "token_type_ids" in example_batch)
    arrays = plain_inputs(example_batch, wrapper.input_names)
    args = tuple(torch.from_numpy(arrays[n]) for n in wrapper.input_names)
    axes = {n: ({0: "batch", 1: "units_" + n} if n.startswith("units_") else
                {0: "batch", 1: "seq"} if n in ("input_ids", "attention_mask", "token_type_ids") else {0: "batch"})
            for n in wrapper.input_names}
    axes.update({n: {0: "batch"} for n in wrapper.output_names})
    path = Path(path)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # Tracer notes on shape-dependent Python branches (mask building in transformers): their
        # values are the same for every batch shape, which the agreement test checks.
        warnings.simplefilter("ignore")
        # The TorchScript exporter: one self-contained file, and no onnxscript dependency.
        torch.onnx.export(wrapper, args, str(tmp), input_names=wrapper.input_names,
                          output_names=wrapper.output_names, dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    return path


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of the weights of MatMul/Gemm (activations quantised per batch)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return dst
