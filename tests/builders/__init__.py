"""What the tests build their inputs from (each test builds its own, in tmp_path).

* ``site_store``: ``make_store``, the one site-store builder: seeded patients with latent
  conditions (the federated, privacy and deployment tests), or with ``separable=True`` one ECG
  per patient whose labels show plainly (centralized training); ``SCHEMA`` (a deployed
  study's prepare settings);
* ``tiny``: the one tiny model: ``TINY_ENCODER``, ``TINY_TRAIN`` (a TrainConfig mapping;
  ``tiny_overrides`` gives it as ``--set`` overrides), ``tiny_joint_model`` and
  ``tiny_classifier`` built from them;
* ``dp_records``: seeded records shaped for ``tiny_joint_model``, for the DP tests (no store);
* ``inference_models``: the tiny classifier with labels, its card, saved (``saved_model``);
* ``run_history``: ``metrics_history``, a run's ``metrics.jsonl`` without timings;
* ``raw_sites``: raw hospital inputs (MIMIC layout, the generic schema, the Challenge) that
  ``fedecg prepare`` reads;
* ``flower_processes``: find and stop the Flower processes a test started.
"""
