"""Evaluations of dictionaries against labelled ground truth from outside dictopt.

:mod:`dictopt.evals.probe_absorption` measures feature absorption the way the field does
(Chanin et al., arXiv 2409.14507; SAEBench's absorption eval): linear probes for a known
feature, k-sparse probing for the latents that carry it, and the latents that fire instead.
:mod:`dictopt.evals.agreement` compares those (main latent, absorbing latent) pairs with
dictopt's label-free findings, read from a check report's JSON.

This layer sits beside ``plots``: it imports ``problem`` and reads reports as JSON, so it never
depends on the checker's internals.
"""
