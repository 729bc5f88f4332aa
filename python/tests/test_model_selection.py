"""model/ selects through this package: its exact selftest (the package against the independent
float64 NumPy rule, on tie-heavy integer inputs) runs here with NumPy alone."""
import os
import sys

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "model")


def test_model_selftest_through_the_package():
    sys.path.insert(0, MODEL)
    try:
        import selftest
    finally:
        sys.path.remove(MODEL)
    assert selftest.main("cpu") == 0
