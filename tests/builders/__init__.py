"""What the tests build their inputs from (each test builds its own, in tmp_path).

* ``site_store``: ``make_store``, a seeded site store of patients with latent conditions (the
  federated, privacy and deployment tests), ``TINY_TRAIN`` (a tiny TrainConfig) and ``SCHEMA``
  (a deployed study's prepare settings);
* ``training_store``: ``make_store``, a separable store for centralized training, with
  ``TINY_CONFIG`` (the same tiny model as ``--set`` overrides) and ``metrics_history``;
* ``dp_records``: seeded records and a tiny ``JointModel`` for the DP tests (no store);
* ``inference_models``: a tiny saved ``EcgClassifier`` and its card;
* ``raw_sites``: raw hospital inputs (MIMIC layout, the generic schema, the Challenge) that
  ``fedecg prepare`` reads;
* ``flower_processes``: find and stop the Flower processes a test started.
"""
