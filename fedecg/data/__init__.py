"""Site data: reading inputs, linking the cohort, preprocessing, the site store, synthesis."""
