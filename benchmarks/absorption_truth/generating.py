"""C5 hierarchy flags on the generating dictionary of dictopt's own superposed worlds.

The truth is the world's own edge list (``World.edges``: the child never fires without its
parent), fixed when the world is drawn; dictopt only checks the generating dictionary with
the exact lasso codes, and a planted edge counts as flagged when a C5 finding on (child,
parent) is labelled ``hierarchy`` or ``near_hierarchy``, and as *significant* when its
held-out decrease is significant (THEORY §5). On the independent world (no edges) every
significant C5 finding is a false positive.
"""

from __future__ import annotations

from typing import Any

import torch


def score_world(name: str, seed: int, lam: float, **params: Any) -> dict[str, Any]:
    """Check the generating dictionary of one world; count flagged and significant edges."""
    from dictopt.check import check
    from dictopt.data.worlds import make_world
    from dictopt.problem import Dictionary

    w = make_world(name, seed=seed, **params)
    D = torch.as_tensor(w.atoms)
    dic = Dictionary.from_decoder(D, torch.as_tensor(w.bias), lam=lam)
    rep = check(dic, torch.as_tensor(w.x), codes="optimal", lam=lam, hull=False,
                heldout=True)
    edges = {(int(c), int(p)) for c, p in w.edges}
    flagged, significant, fp_sig = set(), set(), 0
    for v in rep.violations:
        if v.condition != "C5":
            continue
        sig = bool(v.heldout is not None and v.heldout.significant)
        if (v.i, v.j) in edges and v.label in ("hierarchy", "near_hierarchy"):
            flagged.add((v.i, v.j))
            if sig:
                significant.add((v.i, v.j))
        elif sig:
            fp_sig += 1
    return {"world": name, "seed": seed, "K": int(D.shape[0]), "d": int(D.shape[1]),
            "edges": len(edges), "flagged": len(flagged), "flagged_significant": len(significant),
            "other_significant_C5": fp_sig,
            "c5_findings": sum(v.condition == "C5" for v in rep.violations)}
