"""The torch adapter runs each call with its own intra-op thread count and gives the caller's back."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gradoracle.adapters.torch_adapter import TorchAdapter  # noqa: E402
from gradoracle.runner import CheckSettings, check  # noqa: E402


def _recording_fn(seen: list[int]) -> Any:
    def fn(ops: Any, a: Any) -> Any:
        seen.append(torch.get_num_threads())
        return ops.tanh(a["x"])

    return fn


def _on_a_thread(work: Any) -> Any:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(work()))
    t.start()
    t.join()
    return out[0]


@pytest.mark.parametrize("method", ["forward", "vjp", "jvp", "hvp", "forward_batch", "vjp_batch"])
def test_each_call_runs_with_one_thread_and_restores_the_callers_setting(method: str) -> None:
    x = {"x": np.linspace(-1, 1, 6)}
    xb = {"x": np.stack([x["x"], -x["x"]])}

    def work() -> tuple[int, list[int], int]:
        torch.set_num_threads(2)
        seen: list[int] = []
        ad, fn = TorchAdapter(), _recording_fn(seen)
        calls = {
            "forward": lambda: ad.forward(fn, x, "float64"),
            "vjp": lambda: ad.vjp(fn, x, ("x",), np.ones(6), "float64"),
            "jvp": lambda: ad.jvp(fn, x, {"x": np.ones(6)}, "float64"),
            "hvp": lambda: ad.hvp(fn, x, ("x",), np.ones(6), {"x": np.ones(6)}, "float64", ad.hvp_methods[0]),
            "forward_batch": lambda: ad.forward_batch(fn, xb, "float64"),
            "vjp_batch": lambda: ad.vjp_batch(fn, xb, ("x",), np.ones((2, 6)), "float64"),
        }
        calls[method]()
        return 2, seen, torch.get_num_threads()

    before, seen, after = _on_a_thread(work)
    assert seen and set(seen) == {1}, seen
    assert after == before == 2


def test_threads_zero_leaves_torchs_setting_and_a_subclass_call_nests() -> None:
    x = {"x": np.linspace(-1, 1, 4)}

    class Wrapping(TorchAdapter):
        def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: Any, dtype: str) -> Any:
            return super().vjp(fn, inputs, wrt, cotangent, dtype)  # nested scoped call

    def work() -> tuple[list[int], list[int], int]:
        torch.set_num_threads(2)
        own: list[int] = []
        TorchAdapter(threads=0).vjp(_recording_fn(own), x, ("x",), np.ones(4), "float64")
        nested: list[int] = []
        Wrapping().vjp(_recording_fn(nested), x, ("x",), np.ones(4), "float64")
        return own, nested, torch.get_num_threads()

    own, nested, after = _on_a_thread(work)
    assert own == [2]  # threads=0: torch's own setting, untouched
    assert nested == [1]
    assert after == 2


def test_threads_option_is_validated() -> None:
    assert TorchAdapter(threads="3").threads == 3
    for bad in ("-1", "many"):
        with pytest.raises(ValueError, match="threads="):
            TorchAdapter(threads=bad)


def test_a_check_still_fails_a_wrong_gradient_with_one_thread() -> None:
    """Negative control: the scoped thread count changes how fast, not what is checked."""

    class Wrong(TorchAdapter):
        name = "torch-wrong-tanh"

        def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: Any, dtype: str) -> Any:
            result = super().vjp(fn, inputs, wrt, cotangent, dtype)
            return type(result)(result.output, {k: 1.01 * v for k, v in result.grads.items()})

    assert (
        check("elementwise-tanh", TorchAdapter(), "float64", CheckSettings(examples=10)).verdict.value
        == "pass"
    )
    bad = check("elementwise-tanh", Wrong(), "float64", CheckSettings(examples=10, batch=1))
    assert bad.verdict.value == "fail", bad.message
