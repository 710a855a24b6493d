"""A synthetic twin of MIMIC-IV-ECG and MIMIC-IV ``hosp`` drawn from a latent-physiology model.

``generate_twin`` writes a complete dataset; ``synthesize_from_clinical`` keeps real clinical
tables and ECG times and synthesizes only the waveforms.
"""

from fedecg.data.synth.clinical_from import synthesize_from_clinical
from fedecg.data.synth.twin import (
    GENERATOR_VERSIONS,
    SYNTH_VERSION,
    TRUTH_FILE,
    TwinSummary,
    generate_twin,
)

__all__ = ["GENERATOR_VERSIONS", "SYNTH_VERSION", "TRUTH_FILE", "TwinSummary", "generate_twin",
           "synthesize_from_clinical"]
