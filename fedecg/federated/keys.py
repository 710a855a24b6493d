"""Every key that travels in a Flower message or lives in ``context.state``, defined once.

Record keys name the records in a message's ``RecordDict``; config keys live in the
``ConfigRecord`` the server sends; metric keys in the ``MetricRecord`` a site replies with.
"""

from __future__ import annotations

# Records of a message (Flower's strategies default to "arrays" and "config").
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"  # ConfigRecord in a reply: which site answered

# Server → site (ConfigRecord).
SERVER_ROUND = "server-round"  # set by Flower's strategies: the round within the stage
PROXIMAL_MU = "proximal-mu"  # set by Flower's FedProx
STAGE_INDEX = "stage-index"
RUN_PLAN = "run-plan"  # JSON of the whole run plan (config, model, reference manifest)
FINAL = "final"  # in an evaluate message after the last round: send the full test metrics

# node_config of a site (deployment: data-dir; simulation: Flower sets partition-id).
NODE_DATA_DIR = "data-dir"
NODE_STATE_DIR = "state-dir"
NODE_PARTITION_ID = "partition-id"
NODE_SITE_INDEX = "site-index"
NODE_SITE_NAME = "site-name"

# Site → server (ConfigRecord SITE).
SITE_NAME = "name"
SITE_INDEX = "index"
SITE_ECGS = "ecgs"  # the ECGs the site holds: the server caps num-examples by the first one

# Site → server (MetricRecord). NUM_EXAMPLES is Flower's default weighting key.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
TRAIN_STEPS = "train-steps"
TRAIN_EXAMPLES_SEEN = "train-examples-seen"
TRAIN_SECONDS = "train-seconds"
PEAK_RSS_MB = "peak-rss-mb"  # the site process's peak resident set during this round
BYTES_RECEIVED = "bytes-received"  # added by the server: parameter bytes a site received
BYTES_SENT = "bytes-sent"  # added by the server: parameter bytes a site sent back
UPDATE_NORM = "update-norm"  # added by the server: distance of a site's update from the global
VAL_PREFIX = "val-"  # val-<key>: an evaluate reply's scores on the validation split
LOSS = "loss"  # evaluation keys: the stage's loss and the macro AUROCs
DIAGNOSIS_AUROC = "diagnosis-auroc"
LAB_AUROC = "lab-auroc"
EVALUATION_KEYS = (LOSS, DIAGNOSIS_AUROC, LAB_AUROC)

# context.state records of a site.
STATE_MODEL = "model"  # ArrayRecord: the site's whole model, personal layers included
STATE_META = "meta"  # ConfigRecord: which model, and the round it was saved after
META_MODEL = "model"
META_ROUND = "global-round"
