"""fedecg.federated: federated training of fedecg's models with Flower (the apps that run it
are built in ``fedecg.app``; the study that walks seeds and models is ``fedecg.study``).

Server side:

* ``orchestration``: ``RunPlan`` (what both sides need) and ``run_server``, the walk through a
  model's stages, one Flower strategy per stage, checkpointed after every round;
* ``strategies``: ``make_strategy`` (Flower's FedAvg/FedProx/FedAdam/FedYogi from config),
  ``Delegate`` (the one forwarding base of fedecg's wrappers) and ``StageRounds``, the
  wrapper that screens, orders and records the sites' replies of a stage's rounds;
* ``waiting``: ``wait_for_sites``, the bounded wait for connected sites;
* ``screening``: what a site's reply must pass before it counts, and what its error may say;
* ``checkpoint``: per-round checkpoints of a run and the sites' saved states;
* ``site_test_metrics``: the final evaluation, each site testing the finished model itself;
* ``evaluation``: the server scoring trained models on every site's (virtual) test split.

Site side:

* ``site_handlers``: what a site does with a train or evaluate message (opens its data,
  checks it against the plan, trains, replies);
* ``site``: ``local_train`` (one round of a stage, through the training stage loop) and
  ``local_evaluate``; no Flower here.

Shared: ``keys`` (every message and state key), ``params`` (state dicts ⇄ Flower arrays).

Studies and their data: ``datasource`` (stores, twins, partitions, ``flwr run`` configs),
``partition`` (patient-disjoint virtual sites), ``simulation`` (a partition's virtual sites
and one run over them in Flower's simulation engine), ``baselines`` (pooled and local-only
training), ``study_summary`` (a study's seeds averaged into its summary, its
``metrics.jsonl``), ``ray_session``, ``flower_env`` and
``flower_log`` (Flower's environment and logs), ``inprocess`` (a grid in this process, for
tests and benchmarks).
"""
