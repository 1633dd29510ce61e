"""Config of query understanding (section ``query_understanding`` of the run config).

One flat dataclass: weak labels, model, entity retrieval, optimisation, tables. The tables
(``python -m query_understanding.tables``) and the pipeline stage read the same object; a table
variant is this config with a few keys overridden.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TASKS = ("pt", "qc", "ner", "tw")  # the Walmart paper's four tasks; "intent" rides on NER (Target)
BODIES = ("mtdnn", "mmoe", "ple")


@dataclass
class QUConfig:
    enabled: bool = False

    # --- weak labels (rules in query_understanding/weak_labels.py)
    pt_clusters: int = 40  # fine title clusters: product type
    qc_clusters: int = 8  # coarse clusters of the fine centroids: query category
    cluster_seed: int = 0
    tfidf_max_features: int = 20000
    svd_dims: int = 100  # LSA dimensions the k-means runs on
    top_terms: int = 8  # per cluster, written to clusters_pt.csv / clusters_qc.csv
    ner_label_fraction: float = 1.0  # share of training queries whose NER tags are used (seeded)

    # --- backbone: scratch | minilm | a local HF checkpoint dir (esci/backbones.py)
    backbone: str = "scratch"
    scratch_vocab_size: int = 4000
    scratch_hidden: int = 64
    scratch_layers: int = 2
    scratch_heads: int = 2
    max_length: int = 24  # sub-tokens of a query, specials included
    entity_max_length: int = 24  # sub-tokens of an entity (product title + brand)

    # --- tasks and body
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    body: str = "mtdnn"  # mtdnn | mmoe | ple
    n_experts: int = 3  # mmoe: experts; ple: experts per task and shared experts
    expert_dim: int = 64
    ple_layers: int = 2
    head_dropout: float = 0.1

    # --- entity awareness (EAMT)
    entity_aware: bool = False
    entity_num: int = 3
    entity_grad: bool = True  # False: entities pass the shared encoder without gradient (K times cheaper backward)
    retrieval_depth: int = 30  # similar training queries read per query before taking entity_num products
    same_locale: bool = True  # engagement data is per marketplace
    listnet: bool = True
    listnet_weight: float = 1.0

    # --- sampling: each mini-batch holds one task (MT-DNN); NER batches repeated this many times
    ner_oversample: int = 1

    # --- joint intent + NER (Target): separate sequential passes, intent at learning_rate * factor
    joint_intent: bool = False
    intent_lr_factor: float = 0.1

    # --- optimisation (the fine-tuning loop, finetune/train.py, with the recipe of query_understanding/train.py)
    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 1e-3  # encoder; scratch encoders want a large rate, minilm ~5e-5
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    scheduler: str = "linear"  # any transformers.get_scheduler name
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    valid_fraction: float = 0.1  # query-grouped inner validation slice of the training folds
    seed: int = 0
    num_threads: int = 1  # torch CPU threads

    # --- tables (python -m query_understanding.tables)
    table_folds: int = 0  # outer folds evaluated; 0 = every fold of the run
    paper_ner_fraction: float = 0.2  # tables 3-7: NER labels on this share of training queries, like
    # the paper's NER set (0.14M of 1M queries); the Target table and the stage use ner_label_fraction
    table_entity_nums: list[int] = field(default_factory=lambda: [2, 3, 5])
    table_oversample: int = 3  # Table 7 "on"
