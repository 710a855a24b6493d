"""fedecg.privacy: differential privacy with cumulative accounting across a federated run.

* ``accounting``: the per-site ``Ledger`` (Opacus accountant history, cumulative ε), the
  ``PrivacyPlan`` of a site's whole training, ``calibrate_noise``, ``affordable_steps``;
* ``objectives``: the per-example versions of the three stages DP-SGD needs;
* ``grouped``: grouped contrastive pretraining (each group's gradient clipped, then noised);
* ``normalization``: public (data-independent) clinical standardization;
* ``validation``: ``validate_model`` (one ``PrivacyError`` naming every unsupported layer);
* ``sample_dp``: ``SitePrivacy``, DP-SGD around one round of the training loop (Opacus);
* ``site_hook``: ``PrivateSite``, what a federated site calls each round (``fedecg.app``);
* ``client_dp``: ``ClientLevelDP``, Flower's fixed-clipping wrappers with fedecg's accounting;
* ``card``: the privacy section of a model card; ``sweep``: the privacy-utility study's
  budgets, table and card entries (``fedecg.app.run_sweep`` runs it).
"""

import logging


def _import_opacus_without_its_root_handler() -> None:
    """Import Opacus and take off the root-logger handler its import adds.

    ``opacus.utils.module_utils`` calls ``logging.basicConfig`` when imported. Flower's logger
    propagates to the root logger, so with that handler every Flower line (in the console and
    in ``flwr log``) printed twice, once in Opacus's format.
    """
    root = logging.getLogger()
    before = list(root.handlers)
    import opacus  # noqa: F401  (the first import of Opacus in fedecg)

    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


_import_opacus_without_its_root_handler()

