"""Evaluations of dictionaries against labelled ground truth from outside dictopt.

:mod:`dictopt.evals.probe_absorption` measures feature absorption the way the field does
(Chanin et al., arXiv 2409.14507; SAEBench's absorption eval): linear probes for a known
feature, k-sparse probing for the latents that carry it, and the latents that fire instead.
:mod:`dictopt.evals.agreement` compares those (main latent, absorbing latent) pairs with
dictopt's label-free findings, read from a check report's JSON.
:mod:`dictopt.evals.structure` asks whether the structure THEORY predicts for absorption (a C5
near-hierarchy, a star, a failed joint hull) sits on the probe method's absorbing latents.

This layer sits beside ``plots``: it imports ``problem`` and reads reports as JSON; the only
piece of the checker it calls is the public hull LP (:func:`dictopt.check.hull.joint_hull`),
for the few atoms of the probe cases that a large check leaves untested.
"""
