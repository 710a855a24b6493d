"""The 12-lead plot helper: one panel per lead in the standard layout, optional shading."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import AxesImage

from fedecg.data.leads import MIMIC_LEADS
from fedecg.data.synth.sites import make_sites
from fedecg.data.synth.waveform import FS, synthesize_record
from fedecg.report.ecg_plot import LAYOUT, plot_12lead

NORMAL = dict(rhythm="sinus", hr_bpm=70.0, rr_cv=0.03, pr_ms=160.0, p_amp_mv=0.12, qrs_ms=90.0,
              qrs_scale=1.0, axis_deg=50.0, qt_ms=390.0, qtc_ms=420.0, t_amp_mv=0.3,
              t_width=1.0, u_amp_mv=0.015, st_mv=0.0, st_territory="none", q_territory="none",
              bbb="none", f_wave_mv=0.0, precordial_gain=1.0)


@pytest.fixture(scope="module")
def ecg() -> np.ndarray:
    sig, _ = synthesize_record(NORMAL, make_sites(1, 0)[0], np.random.default_rng(0),
                               nan_runs=False)
    return sig


def _traces(ax) -> list:
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 1000]


def test_twelve_panels_in_standard_layout_with_the_right_traces(ecg: np.ndarray, tmp_path: Path):
    fig = plot_12lead(ecg, FS, list(MIMIC_LEADS), title="normal sinus")
    panels = [ax for ax in fig.axes if (ax.get_gid() or "").startswith("lead:")]
    assert len(panels) == 12
    for ax in panels:
        spec = ax.get_subplotspec()
        row, column = spec.rowspan.start, spec.colspan.start
        assert ax.get_gid() == f"lead:{LAYOUT[row][column]}"
    by_name = {ax.get_gid().removeprefix("lead:"): ax for ax in panels}
    # aVL is the 6th MIMIC channel, not the 5th: mapped by name
    np.testing.assert_array_equal(_traces(by_name["aVL"])[0].get_ydata(), ecg[5])
    np.testing.assert_array_equal(_traces(by_name["aVF"])[0].get_ydata(), ecg[4])
    assert not any(isinstance(a, AxesImage) for ax in panels for a in ax.get_images())
    fig.savefig(tmp_path / "ecg.png", dpi=40)
    assert (tmp_path / "ecg.png").stat().st_size > 10_000
    plt.close(fig)


def test_attribution_shades_each_panel_with_its_own_row(ecg: np.ndarray):
    attribution = np.zeros_like(ecg)
    attribution[1, 1000:1500] = 1.0  # lead II only
    fig = plot_12lead(ecg, FS, list(MIMIC_LEADS), attribution=attribution)
    panels = {ax.get_gid().removeprefix("lead:"): ax for ax in fig.axes if ax.get_gid()}
    assert all(len(ax.get_images()) == 1 for ax in panels.values())
    shade_ii = panels["II"].get_images()[0].get_array()
    assert shade_ii.max() == 1.0 and shade_ii.sum() == 500
    assert panels["I"].get_images()[0].get_array().max() == 0.0
    plt.close(fig)


def test_draws_into_given_axes_and_rejects_bad_shapes(ecg: np.ndarray):
    fig, axes = plt.subplots(3, 4)
    out = plot_12lead(ecg, FS, list(MIMIC_LEADS), ax_grid=list(axes.ravel()))
    assert out is fig
    assert all(_traces(ax) for ax in axes.ravel())
    plt.close(fig)
    with pytest.raises(ValueError, match="expected the signal's shape"):
        plot_12lead(ecg, FS, list(MIMIC_LEADS), attribution=np.zeros((12, 10)))
    with pytest.raises(ValueError, match="matching the 11 lead names"):
        plot_12lead(ecg, FS, list(MIMIC_LEADS)[:11])
