"""Run an exported cross-encoder with ONNX Runtime over the same batches as ``finetune.predict``:
rows sorted by length, each batch padded to its own longest pair."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from finetune.batches import PairCollator, inference_batches
from finetune.inputs import EncodedPairs
from finetune.onnx_export import plain_inputs


def session(path: Path, threads: int = 1):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_outputs(sess, pairs: EncodedPairs, rows: np.ndarray, pad_id: int, batch_size: int,
                length_sorted: bool = True, progress: bool = False) -> dict[str, np.ndarray]:
    """Per-row outputs of every head, as ``finetune.predict.predict_outputs`` returns them."""
    collate = PairCollator(pairs, pad_id)
    names = [i.name for i in sess.get_inputs()]
    tasks = [o.name for o in sess.get_outputs()]
    order, chunks = [], {t: [] for t in tasks}
    batches = inference_batches(np.asarray(rows), pairs, batch_size, length_sorted)
    for batch_rows in tqdm(batches, desc="onnx", disable=not progress, leave=False, mininterval=1):
        for task, p in zip(tasks, sess.run(tasks, plain_inputs(collate(batch_rows), names))):
            chunks[task].append(p)
        order.append(batch_rows)
    position = {r: i for i, r in enumerate(np.concatenate(order))}
    back = np.array([position[r] for r in rows])
    return {task: np.concatenate(parts)[back] for task, parts in chunks.items()}
