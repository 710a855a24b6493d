"""fedecg.training: the three stages, the loop, metrics and the centralized pipeline.

Public API (federated training reuses it unchanged):

* ``stages``: ``Stage`` protocol (``name``, ``targets``, ``trainable``, ``shared_keys``,
  ``loss``), ``PretrainStage``, ``LabHeadStage``, ``DiagnosisStage``,
  ``build_stages(config, pretrained)``;
* ``trainer``: ``activate(model, stage)``, ``make_optimizer``, ``warmup_cosine``,
  ``train_window`` (the one stage loop: a window of a stage's epochs, centralized or a
  federated site's round), ``train_epoch(model, stage, loader, optimizer, extra_loss=...)``;
* ``data``: ``TrainingData`` (the stores a model trains on), ``CropDataset`` (seeded per
  ``(seed, epoch, item)``), ``epoch_loader``, ``rows_with_targets``;
* ``runner``: ``fit_model`` (the model from ``fedecg.models.build``), ``stage_config``;
  ``checkpoint``: ``save_checkpoint``/``load_checkpoint``;
* ``evaluate``: ``predict``, ``evaluate``, ``validate``, ``flatten``; ``metrics``:
  ``label_metrics``, ``bootstrap_macro``; ``losses``: ``masked_bce``, ``infonce``, ``siglip``;
* ``pipeline``: ``train_models(stores, config, out, models=None, seed=None)`` (``fedecg train``).
"""
