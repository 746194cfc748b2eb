"""The 1-D model against SAEs: do SAE architectures find the predicted antipodal pair?

Usage: ``python benchmarks/wide_one_d_sae.py [--n 4000] [--d 8] [--lam 0.1] [--K 2]
[--seeds 0,1] [--steps 3000] [--arch relu,topk,...]``. Prints the prediction (Huber location,
densities, L_∞) and, per architecture and seed, the best cosines with ±w, the densities of the
±w atoms, the bias location and the canonical loss with the SAE's own codes.
"""

from __future__ import annotations

import argparse
import time

import torch

from dictopt.data.worlds import make_world
from dictopt.wide.one_d import SAE_ONE_D_OPTIONS, predict_one_d, sae_on_one_d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--K", type=int, default=2)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--arch", default=",".join(SAE_ONE_D_OPTIONS))
    args = parser.parse_args()
    world = make_world("dense1d", n=args.n, d=args.d, k_sparse=0, seed=0)
    x = torch.as_tensor(world.x)
    w = torch.as_tensor(world.atoms[0])
    pr = predict_one_d(x, args.lam, direction=w)
    print(f"prediction: location {pr.location:.4f}  densities +{pr.density_plus:.3f} "
          f"-{pr.density_minus:.3f}  L_inf {pr.l_inf:.5f}  (limit atoms: {pr.n_rays}, "
          f"cos {pr.pair_cosine:.6f})")
    seeds = [int(s) for s in args.seeds.split(",")]
    for arch in args.arch.split(","):
        t0 = time.perf_counter()
        rows = sae_on_one_d(x, args.lam, w, architectures=[arch], K=args.K, seeds=seeds,
                            total_steps=args.steps, lr=args.lr)
        for r in rows:
            p = r.pair
            print(f"{arch:>11} seed {r.seed}: cos+ {p.cos_plus:+.4f} cos- {p.cos_minus:+.4f} "
                  f"pair {'yes' if p.antipodal else 'no '}  dens+ {p.density_plus:.3f} "
                  f"dens- {p.density_minus:.3f}  b·w {p.bias_location:+.4f}  "
                  f"loss {r.loss_own:.5f} (gap to L_inf {r.loss_own - pr.l_inf:+.5f})")
        print(f"{'':>11} ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
