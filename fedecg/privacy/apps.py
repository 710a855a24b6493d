"""The Flower apps with the privacy layer plugged in (what ``pyproject.toml`` components name).

* ``client_app``: fedecg's ClientApp whose sites run ``PrivateSite`` (sample-level DP-SGD)
  when the run's ``privacy.mode`` is ``sample`` with a finite target, and whose train messages
  pass ``client_clipping_mod`` (client-side clipping, for client-level DP);
* ``client_level``: the server's strategy wrapper for ``privacy.mode: client`` (one
  ``ClientLevelDP`` per run, its ledger saved beside the run's checkpoint), which the
  ServerApps plug in (``fedecg simulate``'s and ``fedecg.deploy.apps:server_app``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context

from fedecg.federated.client_app import Site, build_client_app
from fedecg.federated.orchestration import RunPlan, StrategyWrap, stages_for
from fedecg.privacy.clipping import client_clipping_mod

if TYPE_CHECKING:  # Opacus loads only when a run asks for DP: every site message starts a
    from fedecg.privacy.site_hook import PrivateSite  # new process, which stays light


def private_site(plan: RunPlan, site: Site, context: Context,
                 global_round: int) -> PrivateSite | None:
    """The site's DP state for this message, or None when the run asks for no sample DP."""
    config = plan.config.privacy
    if config.mode != "sample" or not config.enabled:
        return None
    from fedecg.privacy.site_hook import PrivateSite

    return PrivateSite.open(config, plan, site.data, site.name, context.state,
                            (site.state_dir, site.index, global_round))


def client_level(plan: RunPlan) -> StrategyWrap | None:
    """Wrap every stage's strategy in client-level DP, or None when the run asks for none."""
    config = plan.config.privacy
    if config.mode != "client" or not config.enabled:
        return None
    from fedecg.privacy.client_dp import LEDGER_FILE, ClientLevelDP

    rounds = {stage.name: plan.config.federation.rounds.of(stage.name)
              for stage in stages_for(plan)}
    sites = plan.config.num_sites
    dp = ClientLevelDP.open(config, rounds, sites, Path(plan.out) / LEDGER_FILE)
    return lambda strategy: dp.wrap(strategy, sites)


client_app = build_client_app(private_site, train_mods=[client_clipping_mod])
