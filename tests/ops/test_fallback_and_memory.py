"""The plain-PyTorch fallback (extension disabled) and the O(n * D) memory promise of the loss ops.

Both run in subprocesses: the fallback needs a fresh interpreter with SSLSTEAL_DISABLE_NATIVE=1, and
peak resident memory (ru_maxrss) is only meaningful for a process that did nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sslsteal_fast import ops

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_fallback_warns_once_and_matches_reference():
    out = _run(
        """
        import warnings, torch
        from sslsteal_fast import ops, build_info
        from sslsteal_fast.ops import reference
        assert not ops.native_available()
        a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
        labels = torch.arange(5).repeat(2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            l1 = ops.info_nce(a, b)
            l2 = ops.soft_nn(torch.cat([a, b]), labels)
            v, i = ops.topk_similarity(a, b, 2)
            d = ops.pairwise_distance(a, b, "cosine")
        assert len([w for w in caught if "reference ops" in str(w.message)]) == 1, caught
        assert torch.equal(l1, reference.info_nce(a, b))
        assert torch.equal(l2, reference.soft_nn(torch.cat([a, b]), labels))
        assert torch.equal(d, reference.pairwise_distance(a, b, "cosine"))
        info = build_info()
        assert info["native"] is False and "SSLSTEAL_DISABLE_NATIVE" in info["load_error"]
        print("fallback ok")
        """,
        SSLSTEAL_DISABLE_NATIVE="1",
    )
    assert "fallback ok" in out


@pytest.mark.skipif(not ops.native_available(), reason="native extension not built")
@pytest.mark.parametrize("loss", ["info_nce", "soft_nn"])
def test_loss_ops_never_hold_an_n_by_n_buffer(loss):
    # n = 16384, D = 64: one float32 n x n matrix is 1 GiB. Forward + backward must stay far below.
    out = _run(
        f"""
        import json, torch
        from sslsteal_fast import ops
        from sslsteal_fast.util.profiling import peak_extra_rss_mib
        torch.set_num_threads(2)
        n, d = 16384, 64
        z = torch.randn(n, d, requires_grad=True)
        labels = torch.arange(n // 2).repeat(2)
        ops.native_available()
        def run():
            if "{loss}" == "info_nce":
                loss = ops.info_nce(z[: n // 2], z[n // 2 :])
            else:
                loss = ops.soft_nn(z, labels)
            loss.backward()
        peak = peak_extra_rss_mib(run)
        # The measurement itself must be able to see an n x n matrix: allocate one and check.
        seen = peak_extra_rss_mib(lambda: torch.ones(n, n))
        print(json.dumps({{"peak_extra_mib": peak, "n_by_n_mib": seen, "finite": bool(torch.isfinite(z.grad).all())}}))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["finite"]
    assert result["n_by_n_mib"] > 900, result  # the probe sees a 1 GiB n x n float32 matrix...
    assert result["peak_extra_mib"] < 128, result  # ...and the loss stays far below one
