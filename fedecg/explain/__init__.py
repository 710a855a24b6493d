"""Explanations of one ECG: predictions from the ECG alone, lab abnormalities that support each
diagnosis (head geometry), and lead/time attributions (captum).

Modules: ``inference`` (read, preprocess as the model card says, test-time crop aggregation),
``support`` (the head-geometry rule), ``attribution`` (captum), ``explanation`` (the whole
explanation, its JSON and its figure).
"""
